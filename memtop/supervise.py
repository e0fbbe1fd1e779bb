"""memtop as a supervisor: see signals even when the main thread is stuck, leave no process behind.

Python runs signal handlers in the main thread only, between bytecodes. A main thread stuck in a C
call (Textual writing to a terminal that is gone: ``tmux kill-session``) never runs them, and
memtop used to ignore SIGTERM and SIGHUP forever. The C-level handler still writes the signal's
number to the wakeup fd at once, whichever thread it lands on: :class:`SignalWatch` reads that fd
in a thread of its own and calls back from there.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from memtop.stderr import say as _say

END_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class SignalWatch:
    """Calls ``on_signal(signum)`` from its own thread for SIGTERM, SIGHUP and SIGINT.

    ``start`` and ``stop`` must run in the main thread (Python's rule for signal handlers).
    """

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self._wanted = {int(s) for s in END_SIGNALS}
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SignalWatch:
        if threading.current_thread() is not threading.main_thread():
            return self  # no signals to watch outside the main thread (tests, embedding)
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in END_SIGNALS:
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue  # `nohup memtop train …`: the user asked for this signal to be ignored
            try:
                self._previous[int(sig)] = signal.signal(sig, _noted)
            except (OSError, ValueError):
                continue
        self._thread = threading.Thread(target=self._run, name="memtop-signals", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        reader = self._reader
        assert reader is not None
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self._wanted:
                    try:
                        self._on_signal(signum)
                    except Exception as exc:  # noqa: BLE001 - the watch must survive its callback
                        _say(f"handling signal {signum} failed: {exc}")

    def stop(self) -> None:
        if self._writer is None or threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError, TypeError):
                continue
        self._previous.clear()
        try:
            signal.set_wakeup_fd(self._previous_fd)
        except (OSError, ValueError):
            signal.set_wakeup_fd(-1)
        self._writer.close()
        if self._reader is not None:
            try:
                self._reader.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._reader.close()
        self._writer = self._reader = None


def _noted(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, :class:`SignalWatch`'s thread acts on the signal."""


def end_own_children(keep: int | None = None) -> list[int]:
    """SIGKILL every process memtop started except ``keep`` (the training), with its process group.

    What is left at this point is a helper (the ``--help`` flag probe, which runs in its own
    process group): it must never outlive memtop. Returns the pids that were ended.
    """
    try:
        import psutil

        children = psutil.Process().children(recursive=False)
    except Exception:  # noqa: BLE001 - psutil missing or /proc unreadable: nothing we can list
        return []
    ended = []
    for proc in children:
        if proc.pid == keep:
            continue
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
            ended.append(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return ended


class RunEnder:
    """Ends a ``memtop train`` run once, on a signal, from its own thread; memtop never hangs after it.

    On SIGTERM, SIGHUP or SIGINT: the child's process group gets the signal (SIGINT stays SIGINT,
    the others become SIGTERM), then SIGKILL after ``grace`` s; memtop's other children (the flag
    probe) are killed. The main thread is then given ``deadline`` s to finish normally (dashboard
    closed, ``meta.json`` finalized, exit code passed on). If it is stuck, this thread finalizes the
    run itself and ends memtop with ``os._exit``: a lost terminal must not leave memtop waiting on a
    futex with ``meta.json`` saying ``running`` forever. A second signal SIGKILLs the group at once.
    """

    def __init__(self, finalize: Callable[[], object], grace: float = 5.0, deadline: float = 3.0) -> None:
        self._finalize = finalize
        self._grace = grace
        self._deadline = deadline
        self._lock = threading.Lock()
        self.child: Any = None  # memtop.launcher.Child once started
        self.signum: int | None = None
        self.main_done = threading.Event()

    @property
    def reason(self) -> str | None:
        """The signal's name once one came (what the dashboard shows), else None."""
        return None if self.signum is None else signal.Signals(self.signum).name

    def on_signal(self, signum: int) -> None:
        with self._lock:
            first = self.signum is None
            if first:
                self.signum = signum
        if not first:
            if self.child is not None:
                self.child.signal_group(signal.SIGKILL)
            return
        threading.Thread(target=self._end, name="memtop-end-run", daemon=True).start()

    def _end(self) -> None:
        signum = self.signum
        assert signum is not None
        child = self.child
        _say(f"{signal.Signals(signum).name} received" + (", ending the training process group" if child is not None else ""))
        code = 128 + signum
        if child is not None:
            code = child.terminate(self._grace, first=signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        end_own_children(keep=child.pid if child is not None else None)
        if self.main_done.wait(self._deadline):
            return
        try:
            self._finalize()
        except Exception as exc:  # noqa: BLE001 - leaving is what matters now
            _say(f"could not finalize the run: {exc}")
        os._exit(code)
