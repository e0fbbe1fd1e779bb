"""Run a small training script the way `memtop train` runs it (the hook injected), without the dashboard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from memtop.launcher import child_environment
from memtop.profiler import step_journal


def run_hooked(
    script: str,
    project: Path,
    run_dir: Path,
    *args: str,
    timeout: float = 180,
    extra_env: dict[str, str] | None = None,
    journal: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Write ``script`` to ``project/train.py`` and run it with the environment `memtop train` gives
    a child: its step journals too (``journal``), recovered into the run once it ended, as
    `memtop train` recovers them (:mod:`memtop.profiler.step_journal`)."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "train.py").write_text(textwrap.dedent(script))
    journals = project / "journals" if journal else None
    if journals is not None:
        journals.mkdir(exist_ok=True)
    env = child_environment(run_dir, None, journal_dir=journals)
    env.pop("RANK", None)
    env.update(extra_env or {})
    try:
        return subprocess.run(
            [sys.executable, "train.py", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    finally:
        if journals is not None:
            step_journal.remove_dir(journals, run_dir)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a record file, each of which must be one complete JSON object."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a partial line"
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def steps_of(records: list[dict[str, Any]]) -> list[int]:
    return [r["step"] for r in records if r["type"] == "step"]


def record_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".jsonl"))


def count_repeats(monkeypatch: Any) -> list[int]:
    """Count the step records written as repeats of the last one (``RankFileWriter.put_repeat``):
    the returned one-item list holds the count so far."""
    from memtop.profiler.writers import RankFileWriter

    repeats = [0]
    put_repeat = RankFileWriter.put_repeat

    def counted(self: RankFileWriter, *args: Any) -> None:
        repeats[0] += 1
        put_repeat(self, *args)

    monkeypatch.setattr(RankFileWriter, "put_repeat", counted)
    return repeats


def count_steady_moments(monkeypatch: Any) -> list[bool]:
    """Record, at each forward end with a steady plan, whether the plan carried it (``SteadyStep.forward_end``)."""
    from memtop.profiler.moments import Composition
    from memtop.profiler.steady import SteadyStep

    taken: list[bool] = []
    forward_end = SteadyStep.forward_end

    def counted(self: SteadyStep, step: int) -> Composition | None:
        comp = forward_end(self, step)
        taken.append(comp is not None)
        return comp

    monkeypatch.setattr(SteadyStep, "forward_end", counted)
    return taken
