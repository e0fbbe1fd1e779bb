"""Helpers for the dashboard tests: a fake child process, a fake reader, and waiting on the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from memtop.tui.app import DashboardApp
from memtop.tui.snapshot import RunSnapshot

FIXED_NOW = 1_700_000_000.0 + 600.0


class FakeChild:
    """Implements memtop.child.ChildController without a process."""

    def __init__(self, pid: int = 4242, code: int | None = None, description: str | None = None) -> None:
        self._pid = pid
        self.code = code
        self.description = description
        self.terminate_calls = 0

    @property
    def pid(self) -> int:
        return self._pid

    def poll(self) -> int | None:
        return self.code

    def terminate(self, grace: float = 5.0) -> int:
        self.terminate_calls += 1
        if self.code is None:
            self.code = 143
            self.description = "killed by SIGTERM (ended by memtop)"
        return self.code

    def describe_exit(self) -> str | None:
        if self.code is None:
            return None
        return self.description or f"exited {self.code}"

    def exit(self, code: int, description: str | None = None) -> None:
        """The child ends by itself."""
        self.code = code
        self.description = description


class FakeReader:
    """A RunReader that hands out the snapshots a test gives it (the last one forever)."""

    def __init__(self, *snapshots: RunSnapshot) -> None:
        self.snapshots = list(snapshots)
        self.polls = 0
        self.closed = False
        self.fail: Exception | None = None

    @property
    def behind(self) -> bool:
        return False

    def poll(self, final: bool = False) -> RunSnapshot:
        self.polls += 1
        if self.fail is not None:
            raise self.fail
        if len(self.snapshots) > 1:
            return self.snapshots.pop(0)
        return self.snapshots[0]

    def close(self) -> None:
        self.closed = True


async def wait_until(pilot: Any, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def wait_for_data(pilot: Any, app: DashboardApp, *, suggestions: bool = True, timeout: float = 10.0) -> None:
    """Until a snapshot is on screen (and the advisor has answered, when asked)."""

    def ready() -> bool:
        shown = app._shown
        if shown is None or app._timeline is None:  # the plot is mounted just after the first frame
            return False
        return not suggestions or shown.suggestions.state != "pending"

    await wait_until(pilot, ready, timeout, "the first snapshot")
    await pilot.pause()


def run_app(app: DashboardApp, body: Callable[[Any], Awaitable[None]], size: tuple[int, int] = (120, 40)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await body(pilot)

    asyncio.run(main())


def screen_text(app: DashboardApp) -> str:
    """What a person would read on the screen, as plain text lines (the way export_screenshot renders)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()
