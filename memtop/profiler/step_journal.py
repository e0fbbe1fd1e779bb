"""The step journal: repeated step lines kept in shared memory, written to the record file in batches.

Most steps of a run repeat the last step record but for four numbers (time, step, step time,
device_used): :meth:`~memtop.profiler.writers.RankFileWriter.put_repeat`. Writing each such line
at once costs a system call a step, the largest single cost of a steady step on a training thread
whose caches the step evicted (docs/performance.md). Under ``memtop train`` the launcher gives the
training a directory on a memory file system (``/dev/shm``, :data:`ENV_DIR`); each process that
writes records keeps there a journal of its own, a small file mapped into memory: a repeated step
is those four numbers stored in it (no system call, no formatting), and the lines are formatted
and written together at least every :data:`FLUSH_SECONDS`, when the journal is full, and before
any other record (so the file's order is the order of the steps).

What a journal holds survives the process: it is a file of the memory file system, not of the
process. When the training ends, the launcher writes what its journals hold that the record
files lack (:func:`recover`) before it reads the run, so a crash of the training (SIGKILL, the
OOM killer, a segfault) still loses at most the step in flight. What a journal can lose: its
last :data:`FLUSH_SECONDS` of repeated steps, where the training and the launcher die together
(a kill of both, the machine going down: the record file's page cache is lost with the machine too).

Who may read a journal is decided by a lock, never by a pid: the process that writes a journal
holds the POSIX write lock of its file (``lockf``) from the moment it makes it; the kernel releases
it when the process ends, however it ends, and a forked child never inherits it. A recovery takes
that lock first (without waiting) and reads only a journal whose lock it got: its process is gone
(a pid in a name could be another process's by then, or a process of another pid namespace sharing
``/dev/shm``), and no other recovery is reading it. A launcher likewise holds the lock of
:data:`LOCK_NAME` in its directory for as long as it runs; a sweep (:func:`make_dir`) takes a
directory only where it gets that lock. (POSIX locks end when their process closes any descriptor
of the file: a process never opens its own journal a second time.)

The journal's pages are written once with ``write()`` when it is made (a full memory file system
fails that call: no journal then, lines are written as before), so storing into the mapping
never has to allocate a page: it cannot raise SIGBUS the way a mapping of a disk file can when
the disk fills. Without the directory (a run outside ``memtop train``, no ``/dev/shm``) every
line is written at once, as before.

Layout: a header of :data:`HEADER` bytes, little-endian (magic, version, the batch's number, the
record file's size where the batch's first line goes (-1: nothing to recover), the record file's
path, the five pieces of text around the four numbers, from :meth:`~memtop.profiler.step_delta.
DeltaStepEncoder.repeat_pieces`), then :data:`CAPACITY` entries of five 8-byte words in the
machine's order (the journal never leaves the machine): the batch it belongs to (int64, stored
last), time (double), step (int64), step time (double, NaN for none), device_used (int64, -1 for
none). The batch's lines are those of its entries from the first, up to the first entry of
another batch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import re
import shutil
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Final

from memtop.profiler.step_delta import repeat_line
from memtop.runs.safeio import open_regular, read_bounded

ENV_DIR: Final = "MEMTOP_JOURNAL_DIR"
FLUSH_SECONDS: Final = 0.5
CAPACITY: Final = 2048
HEADER: Final = 4096
MAGIC: Final = b"MTJ1"
VERSION: Final = 1
SUFFIX: Final = ".journal"
_FIXED = struct.Struct("<4sIqqII")  # magic, version, batch, file offset, path length, pieces length
_WORD = struct.Struct("<q")  # the batch (at 8) and the file offset (at 16), each stored alone
_ENTRY = struct.Struct("=qdqdq")  # the batch it belongs to, then the four numbers (native order: memoryview stores)
SIZE: Final = HEADER + CAPACITY * _ENTRY.size
_NOTHING: Final = -1  # the file offset of a journal with nothing to recover
_FIRST_WORD: Final = HEADER // 8  # the first entry's first 8-byte word
assert _ENTRY.size == 40 and struct.calcsize("=q") == struct.calcsize("=d") == 8 and HEADER % 8 == 0
_NONE_USED: Final = -1
_recovering = threading.Lock()
LOCK_NAME: Final = "launcher.lock"  # in a run's journal directory: locked by its launcher while it runs
_UNLOCKED_AGE: Final = 60.0  # a directory without a lock file (one being made) is a dead launcher's only when older
_YOUNG: Final = 10.0  # a lock file or journal made this recently may be its maker's, not yet locked: left alone
_END_WAIT: Final = 2.0  # at the end of a run, how long a journal still locked (its process still exiting) is waited for
_dir_locks: dict[Path, int] = {}  # this launcher's directories: their lock files' descriptors, held until removed
_SEP: Final = "\x00"  # between the pieces (JSON text holds no raw NUL: json writes it \u0000)


def journal_root() -> Path | None:
    """Where ``memtop train`` makes its runs' journal directories: ``/dev/shm`` where it is a
    writable directory (a memory file system), else None (no journal: lines written at once)."""
    root = Path("/dev/shm")
    try:
        st = os.stat(root)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or not os.access(root, os.W_OK | os.X_OK):
        return None
    return root


def make_dir(root: Path | None = None) -> Path | None:
    """A new directory for one run's journals (private to this user, locked by this launcher until
    :func:`remove_dir`), or None where none can be made. The directories dead launchers left are
    swept first (never an exception: a damaged one cannot stop a run from starting)."""
    root = journal_root() if root is None else root
    if root is None:
        return None
    try:
        _sweep(root)
    except Exception:  # noqa: BLE001 - whatever another launcher left, this run starts
        pass
    for n in range(100):
        path = root / f"memtop-{os.getpid()}-{n}"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        except OSError:
            return None
        fd = _open_lock_file(path / LOCK_NAME, create=True)
        if fd is None or not _lock(fd):
            if fd is not None:
                os.close(fd)
            shutil.rmtree(path, ignore_errors=True)
            return None  # (a file system without locks: no journal, lines written at once)
        _dir_locks[path] = fd
        return path
    return None


def _lock(fd: int) -> bool:
    """The POSIX write lock of ``fd``'s file, taken without waiting; False where another process
    holds it (or the file system has no locks)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _still_there(fd: int, path: Path) -> bool:
    """Whether ``fd`` (just locked) is the file at ``path`` now, and not one made in the last
    :data:`_YOUNG` seconds (its maker may not have locked it yet)."""
    try:
        mine, there = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino) and mine.st_nlink > 0 and time.time() - mine.st_mtime >= _YOUNG


def _open_lock_file(path: Path, create: bool = False) -> int | None:
    """A descriptor (read-write: a POSIX write lock needs it) of a regular file, never through a link;
    None where there is none such."""
    flags = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | (os.O_CREAT | os.O_EXCL if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except (OSError, ValueError):
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _sweep(root: Path) -> None:
    """The journal directories this user's dead launchers left (a ``memtop train`` killed before
    it could remove its own): what their journals of dead processes hold written into their runs
    (:func:`_recover_stale`), then each directory removed once no journal is left in it. A directory
    is a dead launcher's where its lock file's lock can be taken (or, without a lock file, where it
    is older than a minute); a journal still locked (its process outlived its launcher) stays."""
    try:
        names = [n for n in os.listdir(root) if n.startswith("memtop-")]
    except OSError:
        return
    uid = os.getuid()
    for name in names:
        path = root / name
        if path in _dir_locks:
            continue  # (this process's own: a second run in one process)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        fd = _open_lock_file(path / LOCK_NAME)
        if fd is None:
            if os.path.lexists(path / LOCK_NAME) or time.time() - st.st_mtime < _UNLOCKED_AGE:
                continue  # a lock file of another kind, or a directory being made
        elif not _lock(fd) or not _still_there(fd, path / LOCK_NAME):
            os.close(fd)
            continue  # its launcher runs (or is making it now); or another sweep removed it and a new launcher took the name
        try:
            _recover_stale(path)
            if not _journals(path):
                shutil.rmtree(path, ignore_errors=True)
        finally:
            if fd is not None:
                os.close(fd)


def _recover_stale(directory: Path) -> None:
    """A dead launcher's journals (it died before its run ended, or left by ``os._exit``): each
    written into its own record file where that is a run's rank file (:func:`_run_of`); the
    directory is this user's and private (0700), so its journals are this user's runs'."""
    with _recovering:
        for name in _names(directory):
            _recover_named(directory, name, None)


def _journals(directory: Path) -> list[str]:
    return [n for n in _names(directory) if n.endswith(SUFFIX)]


def remove_dir(directory: Path, run_dir: Path) -> None:
    """The run is over: what the journals of ended processes hold written (:func:`recover`; a
    journal still locked, its process still exiting, waited for up to :data:`_END_WAIT` seconds),
    then the directory removed, unless a journal is still locked (a process that outlived the run:
    the next launcher's sweep writes it once that process ends). Never raises."""
    deadline = time.monotonic() + _END_WAIT
    try:
        while True:
            recover(directory, run_dir)
            if not _journals(directory) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if not _journals(directory):
            shutil.rmtree(directory, ignore_errors=True)
    except Exception:  # noqa: BLE001 - the run's records are read next, whatever is left here
        pass
    finally:
        fd = _dir_locks.pop(directory, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # (the lock released: a later sweep may take what is left)


def representable(time: object, step: object, step_time: object, device_used: object) -> bool:
    """Whether an entry keeps these four numbers exactly as the line would have written them."""
    return (
        type(time) is float
        and not (time - time)  # finite (x - x is nan for inf and nan)
        and type(step) is int
        and -(1 << 63) <= step < 1 << 63
        and (step_time is None or (type(step_time) is float and not (step_time - step_time)))
        and (device_used is None or (type(device_used) is int and 0 <= device_used < 1 << 63))
    )


class StepJournal:
    """This process's journal (made by :meth:`open`); the record writer's, under its lock."""

    def __init__(self, path: Path, fd: int, mm: mmap.mmap) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self.pieces: tuple[str, ...] | None = None  # the batch's text (None: no batch begun)
        self.count = 0  # entries of the batch so far
        self.started = 0.0  # the batch's first record time
        self._batch = 0  # batches so far: an entry belongs to the batch its first field names
        self.offset = 0  # the record file's size where the batch's first line goes
        self.capacity = min(CAPACITY, (len(mm) - HEADER) // _ENTRY.size)  # entries a batch holds at most
        # the entries as 8-byte words: stored one by one (cheaper than packing them on a cold
        # training thread), the batch's number last: an entry counts once it is whole
        self._words = memoryview(mm).cast("q")
        self._floats = memoryview(mm).cast("d")

    @classmethod
    def open(cls, directory: Path) -> StepJournal | None:
        """A journal of this process in ``directory``, its pages written (allocated) now; None
        where it cannot be made (no such directory, a full memory file system, no mmap)."""
        for n in range(100):
            path = directory / f"{os.getpid()}-{n}{SUFFIX}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0), 0o600)
            except FileExistsError:
                continue
            except OSError:
                return None
            try:
                if not _lock(fd):  # (held by this process until it ends: what tells a recovery it is alive)
                    raise OSError("no lock")
                zeros = bytes(1 << 16)
                left = SIZE
                while left:
                    left -= os.write(fd, zeros[: min(left, len(zeros))])
                mm = mmap.mmap(fd, SIZE)
            except (OSError, ValueError):
                with contextlib.suppress(OSError):
                    os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                return None
            return cls(path, fd, mm)
        return None

    def begin(self, pieces: tuple[str, ...], record_path: Path, file_size: int, now: float) -> bool:
        """A new batch: its lines are ``pieces`` around each entry's numbers, to be written at
        ``file_size`` of the record file at ``record_path``; ``now``: the first step's record
        time (wall clock). False where the text does not fit."""
        path_b = os.fsencode(record_path)
        text = _SEP.join(pieces).encode("utf-8")
        if _FIXED.size + len(path_b) + len(text) > HEADER:
            return False
        # each state between these stores reads as "nothing to recover" or as this batch: the
        # offset says nothing until the batch and its text are in place
        mm, batch = self._mm, self._batch + 1
        _WORD.pack_into(mm, 16, _NOTHING)
        _WORD.pack_into(mm, 8, batch)
        mm[_FIXED.size : _FIXED.size + len(path_b) + len(text)] = path_b + text
        _FIXED.pack_into(mm, 0, MAGIC, VERSION, batch, _NOTHING, len(path_b), len(text))
        _WORD.pack_into(mm, 16, file_size)
        self.pieces, self.count, self.started, self._batch, self.offset = pieces, 0, now, batch, file_size
        return True

    def add(self, time: float, step: int, step_time: float | None, device_used: int | None) -> None:
        """Store a step (:func:`representable` numbers; a batch begun and not full): its numbers,
        then the batch's number that makes it one of the batch's entries (a reader takes the
        entries that name the header's batch; an aligned 8-byte store is never half done)."""
        n = self.count
        at = _FIRST_WORD + n * 5
        floats, words = self._floats, self._words
        floats[at + 1] = time
        words[at + 2] = step
        floats[at + 3] = _NAN if step_time is None else step_time
        words[at + 4] = _NONE_USED if device_used is None else device_used
        words[at] = self._batch
        self.count = n + 1

    def due(self, now: float) -> bool:
        """The batch is full, or began :data:`FLUSH_SECONDS` before ``now`` (a step's record time;
        a clock set back ends the batch too)."""
        return self.count >= self.capacity or not 0.0 <= now - self.started < FLUSH_SECONDS

    def lines(self) -> list[bytes]:
        """The batch's lines, formatted. The journal is unchanged until :meth:`written`: a flush
        cut short (a signal handler, Ctrl-C) leaves the batch to the next flush or to a recovery."""
        pieces, n = self.pieces, self.count
        if pieces is None or not n:
            return []
        return _lines(pieces, self._mm, self._batch, n)

    def landed(self, fd: int, record_path: Path, data: bytes) -> int | None:
        """How much of ``data`` (the batch's lines) the record file (open as ``fd``) already holds
        where the batch goes: 0 as a rule; more after a flush cut short between its write and
        :meth:`written`; None where the file holds other bytes there."""
        return _landed(fd, record_path, self.offset, data)

    def written(self) -> None:
        """The batch's lines are in the file (or lost to a failed write): nothing for a recovery,
        then an empty journal (in this order: a batch is never both written and pending)."""
        _WORD.pack_into(self._mm, 16, _NOTHING)
        self.pieces, self.count = None, 0

    def _unmap(self) -> None:
        self._words.release()
        self._floats.release()
        with contextlib.suppress(OSError, ValueError, BufferError):
            self._mm.close()

    def close(self) -> None:
        """Unmap the journal and remove it, unless a batch is still pending (a flush cut short at
        the end: the launcher's recovery writes it). The directory stays (another process of the
        run, or a later session of this one, may open a journal there): the launcher removes it at
        the end of the run, or the next launcher if this one was killed."""
        pending = self.count > 0
        self._unmap()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if not pending:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def abandon(self) -> None:
        """A forked child's copy of its parent's journal: never written here (the mapping is shared)."""
        self._unmap()
        with contextlib.suppress(OSError):
            os.close(self._fd)


_NAN: Final = float("nan")


def _lines(pieces: tuple[str, ...], buf: bytes | mmap.mmap, batch: int, n: int) -> list[bytes]:
    """The lines of the first ``n`` entries, up to the first that is not of ``batch``."""
    out = []
    unpack = _ENTRY.unpack_from
    for i in range(n):
        mark, time, step, step_time, used = unpack(buf, HEADER + i * _ENTRY.size)
        if mark != batch:
            break  # an older batch's entry: this batch ends here
        line = repeat_line(pieces, time, step, None if step_time != step_time else step_time, None if used == _NONE_USED else used)
        if line is None:
            break  # not what add() stores: a damaged journal ends here
        out.append(line.encode("utf-8"))
    return out


def read(path: Path) -> tuple[Path, int, list[bytes]] | None:
    """A journal file's record file, the size of that file where its lines go, and its lines;
    None where the file is not a journal of this format (checked field by field: a journal is
    read after its process died, and may be anything). Reading takes no lock (a recovery reads
    through :func:`recover_file`); never call it on a journal of this process: closing the file
    ends this process's lock on it (POSIX), and the journal would then look dead."""
    try:
        data = read_bounded(path, SIZE)  # (a regular file, never a FIFO or a device; no larger than a journal)
    except OSError:
        return None
    return _parse(data)


def _parse(data: bytes) -> tuple[Path, int, list[bytes]] | None:
    if len(data) < HEADER:
        return None
    magic, version, batch, offset, path_len, pieces_len = _FIXED.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION or batch <= 0 or offset < 0 or _FIXED.size + path_len + pieces_len > HEADER:
        return None
    count = min(CAPACITY, (len(data) - HEADER) // _ENTRY.size)
    record_b = data[_FIXED.size : _FIXED.size + path_len]
    if not record_b.startswith(b"/") or b"\0" in record_b:
        return None  # the writer stores an absolute path, which never holds a NUL
    record = os.fsdecode(record_b)
    try:
        text = data[_FIXED.size + path_len : _FIXED.size + path_len + pieces_len].decode("utf-8")
    except UnicodeDecodeError:
        return None
    pieces = tuple(text.split(_SEP))
    if len(pieces) != 5:
        return None
    lines = _lines(pieces, data, batch, count)
    if lines and not _a_step_line(lines[0]):
        return None  # damaged text: the numbers are always JSON numbers, so one line tells for all
    return Path(record), offset, lines


def _a_step_line(line: bytes) -> bool:
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):  # (damaged text nested deep enough stops the parser)
        return False
    return isinstance(doc, dict) and doc.get("type") == "step" and line.endswith(b"}\n") and line.count(b"\n") == 1


def _landed(fd: int, record_path: Path, offset: int, data: bytes) -> int | None:
    """The bytes of ``data`` that the file (open as ``fd``; read through ``record_path``) holds
    from ``offset``: 0..len(data), or None where it holds other bytes there (or is shorter)."""
    have = min(os.fstat(fd).st_size - offset, len(data))
    if have <= 0:
        return 0 if have == 0 else None
    with open_regular(record_path) as fh:
        return have if os.pread(fh.fileno(), have, offset) == data[:have] else None


def recover(directory: Path, run_dir: Path) -> int:
    """After the training ended: write into each record file of ``run_dir`` the lines its
    journal in ``directory`` holds that the file lacks (the journal's process died before it
    wrote them), then remove the journals of processes that are gone. Returns the lines written.

    Only journals whose lock can be taken are read (their process is gone: a process still
    running holds its journal's lock); only regular files directly in ``run_dir`` are written, at
    their end, and only where the file is exactly as long as the journal says it was before those
    lines (or holds some of them). Never raises."""
    with _recovering:  # (the launcher's threads may both see the training end)
        return sum(_recover_named(directory, name, run_dir) for name in _names(directory))


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _recover_named(directory: Path, name: str, run_dir: Path | None) -> int:
    return recover_file(directory / name, run_dir) if name.endswith(SUFFIX) else 0


def recover_file(path: Path, run_dir: Path | None) -> int:
    """:func:`recover` of one journal: where its lock can be taken (its process is gone, no other
    recovery is at it), the lines its record file lacks written there and the journal removed;
    a journal still locked is left as it is. Returns the lines written; never raises.
    ``run_dir`` None: the record file's own run directory, where it is one (:func:`_run_of`)."""
    fd = _open_lock_file(path)
    if fd is None:  # a link, a FIFO...: never a journal (the directory is private), dropped; a
        # regular file that could not be opened now (out of descriptors) may be a live one: kept
        with contextlib.suppress(OSError, ValueError):
            mode = os.lstat(path).st_mode
            if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                os.unlink(path)
        return 0
    written = 0
    try:
        if not _lock(fd):
            return 0  # its process runs (or exits now), or another recovery has it
        st = os.fstat(fd)
        if st.st_nlink == 0 or st.st_size > SIZE:
            return 0  # removed by the recovery that held it before us; or not a journal
        if st.st_size < SIZE and time.time() - st.st_mtime < _YOUNG:
            return 0  # being made this moment (created, not yet locked): its maker's
        found = _parse(os.pread(fd, SIZE, 0))
        if found is not None:
            run: str | None = os.path.realpath(run_dir) if run_dir is not None else None
            if run is None or os.path.dirname(os.path.realpath(found[0])) != run:
                run = _run_of(found[0])  # (a record file of another run: written into its own run)
            written = 0 if run is None else _append_missing(found, run)
        with contextlib.suppress(OSError):
            os.unlink(path)  # (while locked: no other recovery reads it after this one)
    except Exception:  # noqa: BLE001 - a damaged journal is dropped, never the launcher
        with contextlib.suppress(OSError):
            os.unlink(path)
    finally:
        os.close(fd)
    return written


def _run_of(record: Path) -> str | None:
    """The run directory of ``record`` where it is a record file of one (``rank<N>.jsonl``,
    ``proc<PID>.jsonl`` or ``proc<PID>-<i>.jsonl`` beside a ``meta.json``), else None."""
    run = os.path.dirname(os.path.realpath(record))
    if re.fullmatch(r"(rank\d+|proc\d+(-\d+)?)\.jsonl", record.name) and os.path.isfile(os.path.join(run, "meta.json")):
        return run
    return None


def _append_missing(found: tuple[Path, int, list[bytes]], run: str) -> int:
    record, offset, lines = found
    if not lines or os.path.dirname(os.path.realpath(record)) != run or os.path.islink(record):
        return 0
    try:
        fd = os.open(record, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0
        data = b"".join(lines)
        have = _landed(fd, record, offset, data)  # bytes of the batch the file already holds
        if have is None or have >= len(data):
            return 0  # all there, or other bytes where the batch goes: never a line written twice or broken
        missing, end = 0, 0
        for line in lines:  # the lines the file lacks, the first maybe in part (a write cut short)
            end += len(line)
            missing += end > have
        tail = data[have:]
        while tail:
            tail = tail[os.write(fd, tail) :]
        return missing
    except OSError:
        return 0
    finally:
        os.close(fd)
