"""Where memtop's own options end and the training command begins (``train`` and ``fit``)."""

from __future__ import annotations

import argparse
import sys


def add_child_argument(parser: argparse.ArgumentParser) -> None:
    """The training command: everything from ``--`` or from the first word that is not one of
    memtop's options (argparse's ``REMAINDER``: no list of which options take a value to keep)."""
    parser.add_argument("child", nargs=argparse.REMAINDER, metavar="CMD ARGS...",
                        help="the training command, after `--` or from the script's name (`script.py ARGS` is short for `python script.py ARGS`)")


def child_command(words: list[str]) -> list[str]:
    """What :func:`add_child_argument` collected, without its ``--`` and with ``python`` before a script."""
    return normalize_child(words[1:] if words[:1] == ["--"] else words)


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
