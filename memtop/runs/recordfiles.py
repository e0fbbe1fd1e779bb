"""Which files of a run directory hold records, and the key each file's records go by.

A run holds ``rank<N>.jsonl`` (one per rank) and ``proc<pid>.jsonl`` (a process of the run that
found its rank's name already held: a ``multiprocessing`` child that steps an optimizer, a
restarted torchrun worker; see docs/run-format.md). Every reader keys a run's records by one
integer per file (``RunData.records``, the dashboard's rows, the TensorBoard follower), so that
code written for ranks keeps working and a process file is never mistaken for a rank:

* ``rank<N>.jsonl``    → ``N`` (below :data:`PROC_KEY`, since a rank file's number has < 10 digits)
* ``proc<pid>.jsonl``  → ``PROC_KEY + pid``; ``proc<pid>-<i>.jsonl`` → ``i * PROC_KEY + pid``

so ranks sort first, then processes. The key is a pure function of the file name, stable while a
run is followed (a rank file appearing later never shifts another file's key). Show a key with
:func:`file_label` (``"rank 3"``, ``"process 1234"``), never as a bare number.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

from memtop.runs.format import PROC_FILE_PREFIX, RANK_FILE_PREFIX, RANK_FILE_SUFFIX
from memtop.runs.safeio import Unreadable, list_dir

PROC_KEY: Final = 1 << 32  # above any rank a file name can carry, above any pid (Linux: < 2**22)
_MAX_PART: Final = 9  # the hook names at most proc<pid>-9.jsonl (memtop.profiler.rankfile.claim)


def file_key(name: str) -> int | None:
    """The key of a record file's name, or None when the name is not one of a record file."""
    if not name.endswith(RANK_FILE_SUFFIX):
        return None
    stem = name[: -len(RANK_FILE_SUFFIX)]
    if stem.startswith(RANK_FILE_PREFIX):
        middle = stem[len(RANK_FILE_PREFIX) :]
        return int(middle) if middle.isdigit() and len(middle) < 10 else None
    if stem.startswith(PROC_FILE_PREFIX):
        pid, sep, part = stem[len(PROC_FILE_PREFIX) :].partition("-")
        if not (pid.isdigit() and len(pid) < 10):
            return None
        if not sep:
            return PROC_KEY + int(pid)
        if part.isdigit() and len(part) == 1 and 2 <= int(part) <= _MAX_PART:
            return int(part) * PROC_KEY + int(pid)
    return None


def is_rank(key: int) -> bool:
    """Whether the key is a rank's (``rank<N>.jsonl``), not another process's."""
    return key < PROC_KEY


def file_pid(key: int) -> int | None:
    """The pid of a ``proc<pid>.jsonl`` key; None for a rank."""
    return None if is_rank(key) else key % PROC_KEY


def file_stem(key: int) -> str:
    """The file name without ``.jsonl``: ``rank3``, ``proc1234``, ``proc1234-2`` (also the
    TensorBoard sub-folder of the file's records)."""
    if is_rank(key):
        return f"{RANK_FILE_PREFIX}{key}"
    part = key // PROC_KEY
    return f"{PROC_FILE_PREFIX}{key % PROC_KEY}" + (f"-{part}" if part > 1 else "")


def file_label(key: int) -> str:
    """How a person reads the key: ``"rank 3"``, ``"process 1234"``, ``"process 1234 (2)"``."""
    if is_rank(key):
        return f"rank {key}"
    part = key // PROC_KEY
    return f"process {key % PROC_KEY}" + (f" ({part})" if part > 1 else "")


def short_label(key: int) -> str:
    """A table cell under a "rank" heading: ``"3"``, ``"pid 1234"``."""
    if is_rank(key):
        return str(key)
    part = key // PROC_KEY
    return f"pid {key % PROC_KEY}" + (f" ({part})" if part > 1 else "")


def count_label(keys: Iterable[int]) -> str:
    """``"2 ranks"``, ``"1 rank + 1 process"``: how many ranks and other processes the keys hold."""
    keys = list(keys)
    ranks = sum(1 for k in keys if is_rank(k))
    out = f"{ranks} rank" + ("s" if ranks != 1 else "")
    procs = len(keys) - ranks
    if procs:
        out += f" + {procs} process" + ("es" if procs != 1 else "")
    return out


def record_files(run_dir: Path) -> dict[int, Path]:
    """``{key: path}`` for every record file of the run directory, ranks first (none if unlistable)."""
    found: dict[int, Path] = {}
    try:
        entries = list_dir(run_dir)
    except Unreadable:
        return found
    for p in entries:
        key = file_key(p.name)
        if key is not None:
            found[key] = p
    return dict(sorted(found.items()))
