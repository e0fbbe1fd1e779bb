"""The thread that polls the reader (and the child) and hands the UI immutable snapshots.

Only this thread touches files. It posts :class:`SnapshotFetched` and never has more than one
in flight: while the UI has not taken the last one, a newer snapshot simply replaces the pending
one here, so a slow UI skips stale frames instead of queueing them (toolong's ``can_replace``
idea, enforced at the source as well).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from textual.message import Message

from memtop.child import ChildController
from memtop.tui.reader import RunReader
from memtop.tui.snapshot import ChildView, RunSnapshot


class SnapshotFetched(Message):
    """A newer picture of the run; a queued older one is dropped in its favour."""

    def __init__(self, snapshot: RunSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotFetched)


class ReaderFailed(Message):
    """The reader raised; the poller keeps trying, the UI says so once."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class Poller(threading.Thread):
    """Polls every ``interval`` seconds (at once while the reader is catching up)."""

    CATCH_UP_POST_EVERY = 0.25
    CATCH_UP_PAUSE = 0.03

    def __init__(
        self,
        reader: RunReader,
        post: Callable[[Message], object],
        *,
        interval: float = 0.5,
        child: ChildController | None = None,
    ) -> None:
        super().__init__(name="memtop-poller", daemon=True)
        self._reader = reader
        self._post = post
        self._interval = interval
        self._child = child
        self._cancelled = threading.Event()
        self._wake = threading.Event()
        self._delivered = threading.Event()
        self._delivered.set()
        self._lock = threading.Lock()
        self._pending: RunSnapshot | None = None
        self._child_final_read = False
        self.polls = 0
        self.errors = 0

    # -- called from the UI thread -------------------------------------------------------------

    def ack(self) -> None:
        """The UI took the last snapshot; the next one may be posted (now, if one is waiting)."""
        self._delivered.set()
        with self._lock:
            waiting = self._pending is not None
        if waiting:
            self._wake.set()

    def poke(self) -> None:
        """Poll now instead of at the next tick."""
        self._wake.set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._wake.set()

    # -- the thread ------------------------------------------------------------------------------

    def _child_view(self) -> tuple[ChildView | None, bool]:
        """The child's state, and whether this is the first poll after it ended (read to the end)."""
        child = self._child
        if child is None:
            return None, False
        code = child.poll()
        final = False
        if code is not None and not self._child_final_read:
            self._child_final_read = True
            final = True
        return ChildView(pid=child.pid, exit_code=code, description=child.describe_exit() if code is not None else None), final

    def _offer(self, snapshot: RunSnapshot) -> None:
        with self._lock:
            self._pending = snapshot
        self._flush()

    def _flush(self) -> None:
        if not self._delivered.is_set():
            return
        with self._lock:
            snapshot, self._pending = self._pending, None
        if snapshot is not None:
            self._delivered.clear()
            self._post(SnapshotFetched(snapshot))

    def run(self) -> None:
        last_key: tuple[int, ChildView | None] | None = None
        last_posted_at = 0.0
        failing = False
        while not self._cancelled.is_set():
            try:
                child_view, final = self._child_view()
                snapshot = self._reader.poll(final=final)
            except Exception as exc:  # noqa: BLE001 -- report to the UI and keep polling; a frozen view is worse
                self.errors += 1
                if not failing:
                    self._post(ReaderFailed(f"{type(exc).__name__}: {exc}"))
                failing = True
                self._cancelled.wait(max(self._interval, 1.0))
                continue
            failing = False
            self.polls += 1
            if child_view is not None:
                snapshot = dataclasses.replace(snapshot, child=child_view)
            key = (snapshot.version, child_view)
            now = time.monotonic()
            behind = self._reader.behind
            if key != last_key and (not behind or now - last_posted_at >= self.CATCH_UP_POST_EVERY):
                last_key = key
                last_posted_at = now
                self._offer(snapshot)
            else:
                self._flush()
            if behind:
                # Catching up with a long run: a short breath between chunks lets the UI thread have
                # the GIL, so keys are answered while millions of records are parsed.
                self._wake.wait(self.CATCH_UP_PAUSE)
                self._wake.clear()
                continue
            self._wake.wait(self._interval)
            self._wake.clear()
        self._reader.close()
