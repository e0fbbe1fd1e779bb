"""Shared fixtures: run the real CLI in a subprocess, read run records, skip GPU tests without CUDA."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "scripts"

# Tests send SIGHUP and SIGINT to the memtop processes they start. A suite started under nohup, or
# in the background of a non-interactive shell, inherits those signals as ignored; an ignored
# signal stays ignored across exec, and memtop keeps it so on purpose (nohup is the user's choice).
# Start the processes under test from the default dispositions.
signal.signal(signal.SIGHUP, signal.SIG_DFL)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fresh_hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An in-process profiler test: no `memtop train` around it, activations walked every step,
    no TensorBoard thread; afterwards the global hooks are taken out again."""
    from memtop.profiler import hooks

    monkeypatch.delenv("MEMTOP_RUN_DIR", raising=False)
    monkeypatch.setenv("MEMTOP_TENSORBOARD", "0")
    monkeypatch.setenv("MEMTOP_ACTIVATIONS", "every")
    yield
    hooks.uninstall()
    hooks.set_session(None)


def memtop_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "memtop", *args]


def run_memtop(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("MEMTOP_RUN_DIR", None)
    full_env.update(env or {})
    return subprocess.run(memtop_cmd(*args), cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


def read_records(run_dir: Path, rank: int = 0) -> list[dict[str, Any]]:
    """Every record of a rank file as its JSON object; step deltas (run format v2) rebuilt."""
    from memtop.runs.reader import read_file

    path = run_dir / f"rank{rank}.jsonl"
    recs, skipped, error = read_file(path)
    assert not skipped and error is None, (skipped, error)
    assert len(recs) == sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return [r.as_json() for r in recs]


def only_run(runs_dir: Path) -> Path:
    runs = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]
