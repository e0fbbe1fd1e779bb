"""How a run stands: meta.json's word, checked against the processes that were writing the run.

``meta.json`` says ``running`` from launch until memtop finalizes it. If memtop was SIGKILLed (the
OOM killer, ``kill -9``) nobody finalizes it, and the run would read as ``running`` forever. So a
``running`` run is ``lost`` once memtop (``pid``) and its training (``child_pid``) are both gone
from this host. A run on another host cannot be checked and keeps meta.json's word.
"""

from __future__ import annotations

import socket
from pathlib import Path

from memtop.runs.records import RunMeta
from memtop.runs.rundir import load_meta

RUNNING = "running"
LOST = "lost"


def run_status(run_dir: Path, meta: RunMeta | None = None) -> str | None:
    """``finished``, ``failed``, ``oom``, ``killed``, ``interrupted``, ``running`` or ``lost``.

    None when there is no meta.json status to go by (the caller may read the records instead).
    ``meta`` saves a read when the caller has it already.
    """
    if meta is None:
        meta = load_meta(run_dir)[0]
    if meta is None or meta.status is None:
        return None
    status = meta.status
    if status == RUNNING and processes_gone(meta):
        return LOST
    return status


def processes_gone(meta: RunMeta) -> bool:
    """True when every process meta.json names (memtop's ``pid``, ``child_pid``) is gone from this host."""
    if meta.host and meta.host != socket.gethostname():
        return False
    pids = [p for p in (meta.pid, meta.child_pid) if p is not None and p > 0]
    if not pids:
        return False
    return not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, OSError):
        return bool(psutil.pid_exists(pid))
