"""Helpers shared by the read-only verbs (analyze, runs, compare, export)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from memtop.errors import MemtopError
from memtop.runs.rundir import default_runs_dir, resolve_run

# Exit codes of the read-only verbs: 2 = usage or input error (no such run, no runs directory,
# bad option), 1 = the run exists but nothing in it could be read.
EXIT_USAGE = 2
EXIT_UNREADABLE = 1


def runs_dir(args: argparse.Namespace) -> Path:
    value = getattr(args, "runs_dir", None)
    return Path(value) if value else default_runs_dir()


def find_run(spec: str | None, args: argparse.Namespace) -> Path:
    """``latest`` / a run id / a path -> the run directory, or MemtopError (exit 2)."""
    return resolve_run(spec, runs_dir(args))


def terminal_width(default: int = 100) -> int:
    return shutil.get_terminal_size((default, 24)).columns


def stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def unreadable(run: Path, warnings: list[str]) -> MemtopError:
    detail = f": {warnings[0]}" if warnings else ""
    return MemtopError(f"nothing could be read from run {run}{detail}", EXIT_UNREADABLE)
