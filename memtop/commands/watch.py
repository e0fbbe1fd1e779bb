"""`memtop watch [RUN|latest]`: the dashboard on a run that goes on elsewhere, or has finished.

The run may be written by ``memtop train --no-tui`` in another terminal, or on another machine
into a shared filesystem: the dashboard only reads the run directory. Quitting never touches the
run (it is not ours to end).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from memtop.commands import add_common_options
from memtop.errors import MemtopError

NAME = "watch"
HELP = "open the dashboard on a running or finished run"


def _refresh(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.05 and 3600 seconds, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "memtop watch [RUN|latest] [--runs-dir DIR] [--refresh SECONDS]"
    parser.add_argument("run", nargs="?", default="latest", help="a run id, a run directory, or `latest` (default)")
    add_common_options(parser)
    parser.add_argument("--refresh", type=_refresh, default=0.5, help="seconds between reads of the run (default 0.5)")


def run(args: argparse.Namespace) -> int:
    from memtop.runs.rundir import resolve_run

    run_dir = resolve_run(args.run, Path(args.runs_dir) if args.runs_dir else None)
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise MemtopError(
            f"memtop watch needs a terminal; for {run_dir} without one use `memtop analyze {run_dir}`"
        )
    try:
        from memtop.tui.app import run_dashboard
    except ImportError as exc:  # textual is optional where only the hook and analyze are used (a GPU box)
        raise MemtopError(f"the dashboard cannot start ({exc}); `memtop analyze {run_dir}` works without it") from None

    run_dashboard(run_dir, child=None, refresh=args.refresh)
    return 0
