"""Which file a process writes its records to: one file per process, never shared.

A process that knows its rank (``torch.distributed`` initialized, else ``RANK`` from torchrun,
else 0) claims ``rank<N>.jsonl``; the file is created with ``O_EXCL``, so if another process of
the run already holds that name (a ``multiprocessing`` child that inherited ``RANK`` or the main
process's default rank 0), this one writes ``proc<pid>.jsonl`` instead. A process whose rank
becomes known later (``init_process_group`` after its first step) moves its file to
``rank<N>.jsonl`` if that name is free (a hard link, so the move is exclusive too).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from memtop.runs import format as fmt

PROC_FILE_PREFIX = "proc"
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


_dist: Any = None  # torch.distributed, imported at the first call (asked once per record)


def distributed_rank() -> int | None:
    """This process's rank in an initialized ``torch.distributed`` group, else None."""
    global _dist
    try:
        dist = _dist
        if dist is None:
            import torch.distributed as dist

            _dist = dist
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # noqa: BLE001 - a broken or partial torch.distributed: no rank known
        return None
    return None


def proc_file_name(pid: int) -> str:
    return f"{PROC_FILE_PREFIX}{pid}{fmt.RANK_FILE_SUFFIX}"


def claim(run_dir: Path, rank: int) -> tuple[int, Path]:
    """Create this process's record file exclusively: ``rank<rank>.jsonl``, else ``proc<pid>.jsonl``.

    Returns the open file descriptor (write-only, append) and its path.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    names = [fmt.rank_file_name(rank), proc_file_name(pid)] + [f"{PROC_FILE_PREFIX}{pid}-{i}{fmt.RANK_FILE_SUFFIX}" for i in range(2, 10)]
    for name in names:
        path = run_dir / name
        try:
            return os.open(path, _FLAGS, 0o644), path
        except FileExistsError:
            continue  # another process of this run holds it (or a dead one with this pid did)
    raise OSError(errno.EEXIST, "no free record file name for this process", str(run_dir))


def move_to_rank(path: Path, rank: int) -> Path | None:
    """Give an already-open record file the name ``rank<rank>.jsonl`` if no process holds it.

    Returns the new path, or None when the name is taken (the file keeps its old name).
    """
    target = path.with_name(fmt.rank_file_name(rank))
    if target == path:
        return path
    try:
        os.link(path, target)  # fails if the name exists: never takes another process's file
    except OSError:
        return None
    try:
        os.unlink(path)
    except OSError:
        pass  # both names point at the same file: readers see one rank file more, never a shared one
    return target
