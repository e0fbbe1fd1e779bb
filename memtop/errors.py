"""One error type for everything a user can get wrong.

Commands raise :class:`MemtopError`; the CLI entry point turns it into one line on stderr and the
carried exit code, so no user mistake ever ends in a traceback.
"""

from __future__ import annotations


class MemtopError(Exception):
    """A user-facing error: printed as ``memtop: <message>`` and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
