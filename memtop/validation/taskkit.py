"""What every validation task shares: its result file, logged subprocesses, `memtop train` runs.

A task is a module under ``memtop.validation.tasks`` run as ``python -m ... STEP_DIR [--quick]`` in
its own process; it writes ``result.json`` (status, one-line headline, a markdown section, figures)
into STEP_DIR, which the runner folds into the summary. A task that dies leaves no result.json and
the runner reports its exit code and log instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtop.runs.records import RunMeta
from memtop.validation.checks import RunCheck, check_run, find_run_dir, read_meta

REPO = Path(__file__).resolve().parent.parent.parent
PASS, FAIL, SKIP = "pass", "fail", "skip"
# The children's --device. Only for trying the task code on a machine without a GPU: the CUDA checks
# then fail, as they should (a CPU has no allocator figures).
DEVICE = os.environ.get("MEMTOP_VALIDATION_DEVICE", "cuda")


@dataclass
class Result:
    status: str = PASS
    headline: str = ""
    sections: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.status = FAIL
        self.sections.append(f"- FAIL: {why}")

    def note(self, text: str) -> None:
        self.sections.append(text)

    def write(self, step_dir: Path) -> None:
        payload = {"status": self.status, "headline": self.headline, "details_md": "\n".join(self.sections), "figures": self.figures}
        (step_dir / "result.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


_LIVE: set[subprocess.Popen[Any]] = set()


def _end_children(signum: int, frame: object) -> None:
    """The runner's timeout (SIGTERM) ends this task: end the process groups it started too, so no
    training is left holding the GPU for the next step. SIGTERM to all first (memtop train passes it
    on to its training's own group), SIGKILL to what is left after a few seconds."""
    children = list(_LIVE)
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + 6.0
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
    raise SystemExit(128 + signum)


def _signal_group(child: subprocess.Popen[Any], sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass


def task_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("step_dir", type=Path)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    args.step_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _end_children)
    return args


@dataclass
class Proc:
    """A finished (or timed-out) subprocess; its output is in ``log``."""

    argv: list[str]
    rc: int | None  # None: killed at its timeout
    seconds: float
    log: Path

    @property
    def timed_out(self) -> bool:
        return self.rc is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def run_logged(argv: list[str], log: Path, timeout: float, env: dict[str, str] | None = None, preexec: Any = None) -> Proc:
    """Run ``argv`` from the repository root in its own process group, output to ``log``;
    on timeout the whole group gets SIGTERM, then SIGKILL."""
    full_env = dict(os.environ if env is None else env)  # env, when given, is the whole environment
    full_env.pop("MEMTOP_RUN_DIR", None)
    t0 = time.monotonic()
    with open(log, "ab") as out:
        out.write(("$ " + shlex.join(argv) + "\n").encode())
        out.flush()
        child = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=full_env, start_new_session=True, preexec_fn=preexec)
        _LIVE.add(child)
        rc: int | None
        try:
            rc = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(child)
            rc = None
        finally:
            _LIVE.discard(child)
    return Proc(argv, rc, time.monotonic() - t0, log)


def stop_group(child: subprocess.Popen[Any], grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def memtop_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "memtop", *args]


def sample(name: str) -> str:
    return str(REPO / "sample_runs" / f"{name}.py")


@dataclass
class TrainRun:
    name: str
    proc: Proc
    run_dir: Path | None
    check: RunCheck
    meta: RunMeta


def memtop_train(runs_dir: Path, name: str, child: list[str], max_steps: int | None, timeout: float,
                 env: dict[str, str] | None = None, expect_steps: int | None = None, preexec: Any = None,
                 log: Path | None = None) -> TrainRun:
    """``memtop train --no-tui`` on ``child`` (argv after ``--``), then the identities on its records."""
    own = ["train", "--no-tui", "--runs-dir", str(runs_dir), "--name", name, "--interval", "5"]
    if max_steps is not None:
        own += ["--max-steps", str(max_steps)]
    proc = run_logged(memtop_argv(*own, "--", *child), log or runs_dir.parent / f"{name}.log", timeout, env, preexec)
    run_dir = find_run_dir(runs_dir, name)
    return TrainRun(name, proc, run_dir, check_run(run_dir, expect_steps), read_meta(run_dir))


def analyze(run_dir: Path, log: Path, timeout: float = 60) -> tuple[Proc, Proc, dict[str, Any] | None]:
    """``memtop analyze RUN`` (text) and ``--json``; the parsed JSON report or None."""
    text = run_logged(memtop_argv("analyze", str(run_dir)), log, timeout)
    json_log = log.with_suffix(".json.log")
    as_json = run_logged(memtop_argv("analyze", str(run_dir), "--json"), json_log, timeout)
    report: dict[str, Any] | None = None
    body = as_json.text().split("\n", 1)[1] if "\n" in as_json.text() else ""
    try:
        parsed = json.loads(body)
        report = parsed if isinstance(parsed, dict) else None
    except ValueError:
        report = None
    return text, as_json, report


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cuda_total_bytes() -> int:
    import torch

    return int(torch.cuda.get_device_properties(0).total_memory)
