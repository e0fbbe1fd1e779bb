"""One module per CLI verb, registered in :data:`COMMANDS`.

Each module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. A
module is imported only when its verb is used, so ``memtop runs`` never pays for Textual or torch.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

# (verb, module, one-line help) -- the order here is the order in `memtop --help`.
COMMANDS: list[tuple[str, str, str]] = [
    ("train", "memtop.commands.train", "launch a training command under the profiler (dashboard or --no-tui)"),
    ("watch", "memtop.commands.watch", "open the dashboard on a running or finished run"),
    ("analyze", "memtop.commands.analyze", "post-mortem report of a run (peak, breakdown, leaks, OOM, advice)"),
    ("runs", "memtop.commands.runs", "list runs, newest first"),
    ("compare", "memtop.commands.compare", "compare two runs category by category"),
    ("export", "memtop.commands.export", "export a run to TensorBoard or CSV"),
    ("fit", "memtop.commands.fit", "capacity planning: the largest batch, frames or resolution that fits, from short probe runs"),
]


def load(module: str) -> ModuleType:
    return importlib.import_module(module)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs-dir",
        default=None,
        help="where runs live (default: $MEMTOP_RUNS_DIR or ./memtop_runs)",
    )
