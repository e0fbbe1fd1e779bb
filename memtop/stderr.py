"""memtop's own one-line messages on stderr."""

from __future__ import annotations

import sys


def say(text: str) -> None:
    """``memtop: text`` on stderr; a terminal that is gone (SIGHUP) or a closed stream must not turn
    memtop's message into a traceback (or end the run it supervises)."""
    try:
        sys.stderr.write(f"memtop: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
