"""The advisor's view of a launch command: split it, change one flag, print it for a shell.

Thin names over :mod:`memtop.analyzers.flags` (one launch-command parser, one renderer), kept
so that the rules read ``cmdline.set_value(args, entry, "4")``.
"""

from __future__ import annotations

from pathlib import Path

from memtop.analyzers.flags.launch import split_command as _split
from memtop.analyzers.flags.render import apply_flag_changes, join, set_bool, set_value
from memtop.runs.flag_entry import FlagEntry

__all__ = ["apply_flag_changes", "join", "set_bool", "set_value", "split_command", "FlagEntry"]


def split_command(command: list[str], cwd: Path | None = None) -> tuple[list[str], list[str]]:
    """``(launcher + script, script args)``, read from the argv alone (``cwd`` is not used: a run
    directory may come from another machine, and reading it must touch nothing of the user's)."""
    del cwd
    return _split(command)
