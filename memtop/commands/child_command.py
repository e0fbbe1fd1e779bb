"""Where memtop's own options end and the training command begins (``train`` and ``fit``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection


def split_child_command(argv: list[str], value_options: Collection[str]) -> tuple[list[str], list[str]]:
    """``[own options] -- CMD ...`` or ``[own options] script.py ARGS`` -> (own, child).

    ``value_options`` are the verb's options that take a separate value (``--runs-dir D``): the
    word after them is theirs, not the start of the command."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], normalize_child(argv[i + 1 :])
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            i += 2 if arg.split("=", 1)[0] in value_options and "=" not in arg else 1
            continue
        return argv[:i], normalize_child(argv[i:])
    return argv, []


def normalize_child(child: list[str]) -> list[str]:
    """``script.py ARGS`` is short for ``python script.py ARGS`` (this interpreter)."""
    if child and child[0].endswith(".py"):
        return [sys.executable, *child]
    return child


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
