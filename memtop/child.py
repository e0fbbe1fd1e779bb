"""The interface between a launched training child and whoever shows it (dashboard or status lines)."""

from __future__ import annotations

from typing import Protocol


class ChildController(Protocol):
    """What the dashboard may do with the child that `memtop train` launched.

    Implemented by :class:`memtop.launcher.Child`; tests hand the dashboard a fake.
    """

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The child's exit code (128+signal when killed) once it has ended, else None."""
        ...

    def terminate(self, grace: float = 5.0) -> int:
        """End the child's whole process group (SIGTERM, then SIGKILL after ``grace`` s); return its exit code."""
        ...

    def describe_exit(self) -> str | None:
        """A short human phrase for how it ended (``exited 0``, ``killed by SIGKILL``, ``OOM``) or None while running."""
        ...
