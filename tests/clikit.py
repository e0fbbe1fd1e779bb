"""Run the real `memtop` CLI in a subprocess for the read-only verbs' tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def memtop(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m memtop ARGS` with no MEMTOP_* from the caller and no flag probing of scripts."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MEMTOP_")}
    full["MEMTOP_NO_FLAG_DETECTION"] = "1"
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "memtop", *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=120, env=full, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("memtop: ") and needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
