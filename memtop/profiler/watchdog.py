"""The training's side of supervision: if memtop dies, the training it launched ends too.

``memtop train`` passes its pid in ``MEMTOP_SUPERVISOR_PID``. The kernel sends the direct child
SIGTERM when memtop dies (``PR_SET_PDEATHSIG``), but that reaches one process: torchrun's ranks,
DataLoader workers and helper processes would run on unsupervised, writing into a run that nobody
finalizes. So every hooked process watches memtop itself (the direct child hands the death signal
over to its watchdog, which ends the group, not just itself): a thread blocked on a pidfd (no
polling; a one-second liveness check where pidfds are missing) wakes when memtop is gone and ends
the whole process group: SIGTERM (a script's own checkpoint-on-SIGTERM handler still runs), then
SIGKILL after a grace period if this process is still there.

Imports nothing beyond the standard library; never raises into the training.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time

ENV_VAR = "MEMTOP_SUPERVISOR_PID"
GRACE_SECONDS = 5.0

_started = False


def start() -> bool:
    """Start watching the supervisor named in the environment (once per process). True if started."""
    global _started
    if _started:
        return False
    try:
        pid = int(os.environ.get(ENV_VAR, ""))
    except ValueError:
        return False
    if pid <= 1 or pid == os.getpid():
        return False
    _started = True
    if os.getppid() == pid:
        _disarm_parent_death_signal()
    try:
        threading.Thread(target=_watch, args=(pid,), name="memtop-watchdog", daemon=True).start()
    except RuntimeError:  # interpreter shutting down
        return False
    return True


def _disarm_parent_death_signal() -> None:
    """The launcher's ``PR_SET_PDEATHSIG`` covers the child until this watchdog runs; now it would
    kill this process the instant memtop dies, before the watchdog could end the rest of the group."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG, no signal
    except (OSError, AttributeError):
        pass


def _watch(pid: int) -> None:
    try:
        _wait_for_exit(pid)
        _end_group(pid)
    except Exception as exc:  # noqa: BLE001 - the watchdog must never break the training
        _say(f"watchdog stopped: {exc}")


def _wait_for_exit(pid: int) -> None:
    """Return once process ``pid`` has ended."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                while not poller.poll():
                    pass
            finally:
                os.close(fd)
            return
    while _alive(pid):
        time.sleep(1.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b")")[-1].split()[0] != b"Z"  # a zombie has ended
    except OSError:
        return True


def _end_group(pid: int) -> None:
    pgid = os.getpgrp()
    _say(f"memtop (pid {pid}) is gone: ending the training it supervised (process group {pgid})")
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.killpg(pgid, signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    os.killpg(pgid, signal.SIGKILL)  # still here: the script outlived SIGTERM, and so may others


def _say(text: str) -> None:
    try:
        sys.stderr.write(f"memtop: {text}\n")
    except (OSError, ValueError):
        pass
