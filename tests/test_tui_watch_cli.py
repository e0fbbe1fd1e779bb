"""`memtop watch` as a command: finds runs, refuses without a terminal, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runfactory import make_run


def _watch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memtop", "watch", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_watch_without_a_terminal_says_what_to_use(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", steps=3)
    out = _watch("latest", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "needs a terminal" in out.stderr and "memtop analyze" in out.stderr
    assert run.name in out.stderr
    assert "Traceback" not in out.stderr


def test_watch_unknown_run_is_one_line(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", steps=3)
    out = _watch("no-such-run", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert out.returncode == 2 and "no run 'no-such-run'" in out.stderr and "Traceback" not in out.stderr
    empty = _watch("--runs-dir", str(tmp_path / "nothing"), cwd=tmp_path)
    assert empty.returncode == 2 and "no runs directory" in empty.stderr


def test_watch_rejects_a_bad_refresh(tmp_path: Path) -> None:
    out = _watch("latest", "--refresh", "0", cwd=tmp_path)
    assert out.returncode == 2 and "refresh" in out.stderr and "Traceback" not in out.stderr
