"""Where records go: this process's record file (written per record) and TensorBoard (off-thread)."""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memtop.profiler import rankfile
from memtop.profiler.step_delta import DeltaStepEncoder, repeat_line
from memtop.profiler.step_index import STEP_HEAD, StepIndexWriter
from memtop.profiler.step_journal import ENV_DIR, FLUSH_SECONDS, StepJournal, representable
from memtop.profiler.step_line import StepLineEncoder


class RecordEncoder:
    """One record -> one JSON line (bytes), reusing the serialized large-tensor list while it is
    unchanged; step records of the usual shape take the fast path of :mod:`memtop.profiler.step_line`
    (the same bytes as ``json``), written as run format v2's full records and deltas
    (:mod:`memtop.profiler.step_delta`; ``deltas=False``: every step record full)."""

    def __init__(self, deltas: bool = True) -> None:
        self._large: tuple[object, str] = (None, "[]")
        self._json = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str)
        self._steps = StepLineEncoder()
        self._deltas = DeltaStepEncoder() if deltas else None
        self._step_lines = 0  # step records of this file so far
        self._source: tuple[dict[str, Any], object] | None = None  # the last step line's record (or the one it repeats) and rank

    def repeat_pieces(self, source: dict[str, Any], rank: int) -> tuple[str, ...] | None:
        """Where the next step line may repeat ``source`` (the last step line was ``source``'s, or
        a repeat of it, with its rank): the text around its four numbers
        (:meth:`~memtop.profiler.step_delta.DeltaStepEncoder.repeat_pieces`); None: :meth:`encode`
        must take a copy. A line written from them is counted with :meth:`counted`."""
        last, deltas = self._source, self._deltas
        if deltas is None or last is None or last[0] is not source or last[1] != rank:
            return None
        return deltas.repeat_pieces(self._step_lines)

    def counted(self) -> None:
        """A step line was made from :meth:`repeat_pieces` (written now or later, in that order)."""
        self._step_lines += 1

    def encode_repeat(self, source: dict[str, Any], rank: int, time: float, step: int, step_time: float | None, device_used: int | None) -> bytes | None:
        """The line of ``source`` with these four figures instead of its own: the bytes
        :meth:`encode` would write for such a copy, without the copy. None: :meth:`encode` must
        take the copy."""
        pieces = self.repeat_pieces(source, rank)
        line = None if pieces is None else repeat_line(pieces, time, step, step_time, device_used)
        if line is None:
            return None
        self._step_lines += 1
        return line.encode("utf-8")

    def forget_base(self) -> None:
        """The next step record is written full (the last line may not have arrived)."""
        self._source = None
        if self._deltas is not None:
            self._deltas.forget()

    def new_file(self) -> None:
        """Records go to a new file from here on: a full record first, step lines counted from 0."""
        self.forget_base()
        self._step_lines = 0

    def encode(self, record: dict[str, Any], source: dict[str, Any] | None = None) -> bytes:
        """The record's line; ``large_tensors``, if any, ends up as the record's last key.

        ``source``: the record this one repeats (:meth:`encode_repeat`), if not itself."""
        large = record.get("large_tensors")
        if record.get("type") == "step":
            index = self._step_lines
            self._step_lines = index + 1
            if isinstance(large, list):
                if large is not self._large[0]:
                    self._large = (large, self._json.encode(large))
                deltas = self._deltas
                line = self._steps.encode(record, self._large[1]) if deltas is None else deltas.encode(record, self._large[1], index)
                if line is not None:
                    self._source = (record if source is None else source, record["rank"])
                    return (line + "\n").encode("utf-8")
            self._source = None
            self.forget_base()  # written whole by the general encoder below: deltas start again after it
        if isinstance(large, list) and large:
            # step records repeat the same large-tensor list for long stretches: serialize it once
            if large is not self._large[0]:
                self._large = (large, self._json.encode(large))
            del record["large_tensors"]
            try:
                head = self._json.encode(record)
            finally:
                record["large_tensors"] = large
            line = f'{head[:-1]},"large_tensors":{self._large[1]}}}\n'
        else:
            line = self._json.encode(record) + "\n"
        return line.encode("utf-8")


def repeat_record(last: dict[str, Any], time: float, step: int, step_time: float | None, device_used: int | None) -> dict[str, Any]:
    """A copy of the step record ``last`` with its own time, step, step time and device_used."""
    rec = last.copy()  # the same keys in the same order: the record format's order
    rec["time"] = time
    rec["step"] = step
    rec["step_time"] = step_time
    rec["device_used"] = device_used
    return rec


_process_id = os.getpid()
_writers: weakref.WeakSet[RankFileWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child: its own pid, and fresh locks (another thread of the parent may have held one)."""
    global _process_id
    _process_id = os.getpid()
    for writer in list(_writers):
        writer._lock = threading.RLock()
    _flusher.clear()  # (threads do not survive a fork)


os.register_at_fork(after_in_child=_after_fork_in_child)

_flusher: list[threading.Thread] = []  # this process's, started with its first journal


def _start_flusher() -> None:
    """A thread that writes a journal's batch once it is :data:`~memtop.profiler.step_journal.
    FLUSH_SECONDS` old and no step came to write it (an evaluation, a checkpoint, the training
    waiting on something): the file, and the dashboard reading it, never lag the steps by more
    than about twice that. It only ever takes a writer's lock when the training thread does not
    hold it, wakes twice a second, and does nothing while the steps write their own batches."""
    if _flusher:
        return
    thread = threading.Thread(target=_flush_stale_journals, name="memtop-journal", daemon=True)
    _flusher.append(thread)
    try:
        thread.start()
    except RuntimeError:  # interpreter shutting down: the exit record writes the batch
        _flusher.clear()


def _flush_stale_journals() -> None:
    pid = _process_id
    while pid == _process_id:
        time.sleep(FLUSH_SECONDS)
        try:
            writers = list(_writers)
        except RuntimeError:  # (the set changed size while copied: next time)
            continue
        for writer in writers:
            writer.flush_stale()


class RankFileWriter:
    """This process's record file: each record is serialized and ``os.write()``n at once.

    The file is opened with ``O_APPEND`` and written without a user-space buffer, so a record is
    in the kernel (the page cache) when :meth:`write` returns: a crash of the process (SIGSEGV,
    SIGKILL, the OOM killer) loses at most the step in flight. The cost is the serialization and
    one system call per record, on the training thread (figures in docs/performance.md).

    Under ``memtop train``, a repeated step record (:meth:`put_repeat`, most steps) is stored in
    this process's step journal instead, and written with the others of its batch at least every
    half second and before any other record (:mod:`memtop.profiler.step_journal`: the launcher
    writes what a journal holds if the process dies first).

    The file is claimed lazily, at the first record, with ``O_EXCL`` (:mod:`memtop.profiler.rankfile`):
    one file per process, never shared. A forked child that writes claims a file of its own; a
    process whose ``torch.distributed`` rank becomes known later moves its file to that rank's name.
    """

    RANK_CHECK_EVERY = 64  # records between two looks for a torch.distributed rank

    def __init__(self, run_dir: Path, rank: int, on_written: Callable[[dict[str, Any]], None] | None = None, step_index: bool = True) -> None:
        self.run_dir = run_dir
        self.rank = rank
        self._on_written = on_written
        self._encoder = RecordEncoder()
        self._lock = threading.RLock()  # RLock: a signal handler may write the exit record mid-write
        self._fd: int | None = None
        self._pid = -1
        self._settled = False  # the name comes from torch.distributed: never moved again
        self._unsettled_writes = 0
        self._want_index = step_index
        self.index: StepIndexWriter | None = None
        self._writing = False
        self.path: Path | None = None
        self.failed_writes = 0
        self._torn = False  # the last write stopped mid-line (disk full)
        self._closed = False
        self.cpu_seconds = 0.0  # CPU time off the training thread: the journal's flusher thread's (records are written where they are made)
        self._journal: StepJournal | None = None  # this process's (memtop train): repeated step lines, in batches
        self._journal_pid = -1
        self._journal_rec: dict[str, Any] | None = None  # the record the batch's lines repeat
        _writers.add(self)

    def _open(self) -> int:
        if self._fd is not None and self._pid == _process_id:
            return self._fd
        # first record, or a forked child that inherited its parent's file: claim one of our own
        self._fd = None
        dist_rank = rankfile.distributed_rank()
        if dist_rank is not None:
            self.rank, self._settled = dist_rank, True
        fd, self.path = rankfile.claim(self.run_dir, self.rank)
        self._fd, self._pid, self._torn = fd, _process_id, False
        self._encoder.new_file()  # deltas never refer to a record of another file (a forked child's parent's)
        self.index = StepIndexWriter(self.path) if self._want_index else None
        self._writing = False  # (a forked child's copy of its parent's state)
        if self._journal is not None and self._journal_pid != _process_id:
            self._journal.abandon()  # a forked child's copy of the parent's (shared) mapping: not ours
        self._journal = None
        directory = os.environ.get(ENV_DIR)
        if directory:
            self._journal, self._journal_pid = StepJournal.open(Path(directory)), _process_id
            if self._journal is not None:
                _start_flusher()
        return fd

    def _settle(self) -> None:
        """torch.distributed initialized after the file was opened: take the rank's name if free.

        Asked at the first records, then every :data:`RANK_CHECK_EVERY` records (a rank appears
        once, at ``init_process_group``, usually before the first step): :meth:`_ready`."""
        dist_rank = rankfile.distributed_rank()
        if dist_rank is None or self.path is None:
            return
        self._settled = True
        if self._fd is not None and self._pid == _process_id:
            self._flush_journal(self._fd)  # the journal names the file: its lines go before the name changes
        moved = rankfile.move_to_rank(self.path, dist_rank)
        if moved is not None:
            self.path, self.rank = moved, dist_rank
            if self.index is not None and self._pid == _process_id:
                self.index.moved(moved)

    def write(self, record: dict[str, Any]) -> None:
        """Serialize and write one record now; it is in the kernel when this returns."""
        with self._lock:
            fd = self._ready()
            self._flush_journal(fd)  # the steps before this record go first
            record["rank"] = self.rank
            data = self._encoder.encode(record)
            self._emit(fd, data, record, data[:14] == STEP_HEAD)
        if self._on_written is not None:
            self._on_written(record)

    def _ready(self) -> int:
        fd = self._fd
        if fd is None or self._pid != _process_id or self._closed:
            if self._closed:
                raise ValueError("the record file is closed")
            fd = self._open()
        if not self._settled:
            n = self._unsettled_writes
            self._unsettled_writes = n + 1
            if n <= 4 or not n % self.RANK_CHECK_EVERY:
                self._settle()
        return fd

    def _emit(self, fd: int, data: bytes, record: dict[str, Any], is_step: bool, sizes: list[int] | None = None) -> None:
        """Write one encoded line (or ``sizes``: the lengths of the step lines ``data`` joins, each
        a repeat of ``record``); ``record``: its figures for the step index (a step line: ``is_step``)."""
        index = self.index
        if self._torn:
            data = b"\n" + data  # end the line a failed write left half written: this record stays whole
        size, was_torn = len(data), self._torn
        if index is not None and (was_torn or self._writing):
            index.abandon()  # a torn line, or a record written from a signal handler mid-write
        self._writing = True
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:
            self._torn = was_torn if len(data) == size else True
            self._encoder.forget_base()  # this line may be missing: no delta may refer to it
            if index is not None:
                index.abandon()
            raise
        finally:
            self._writing = False
        self._torn = False
        if index is not None and not index.dead:
            if sizes is None:
                index.add(record, size, is_step)
            else:
                for n in sizes:
                    index.add(record, n, True)

    def _flush_journal(self, fd: int) -> None:
        """Write the journal's batch (a failed write loses those lines, as :meth:`put` loses a record).

        The journal stays as it is until the lines are in the file: a flush cut short (a signal
        handler writing the exit record, Ctrl-C) leaves the batch to the next flush, which writes
        what the file lacks of it (never a line twice), or to the launcher's recovery."""
        journal = self._journal
        if journal is None or not journal.count:
            return
        lines = journal.lines()
        rec, path = self._journal_rec, self.path
        try:
            if lines and rec is not None and path is not None:
                data = b"".join(lines)
                done = journal.landed(fd, path, data)
                if not done:  # (None, where the file holds other bytes: cannot happen, as all writes flush first; written all the same)
                    self._emit(fd, data, rec, True, [len(line) for line in lines])
                else:  # a flush cut short wrote some or all of it: the rest
                    if self.index is not None:
                        self.index.abandon()  # (it never saw those lines)
                    if done < len(data):
                        self._emit(fd, data[done:], rec, True)
        except OSError:
            self.failed_writes += len(lines)
        # Not in a `finally`: an interrupt (Ctrl-C, a signal handler's SystemExit) anywhere above
        # leaves the batch in the journal, for the next flush or the launcher's recovery.
        journal.written()

    def flush_stale(self) -> None:
        """From the flusher thread: write the journal's batch if it is due and no step wrote it;
        never waits for the training thread (its lock taken only where free), never raises (its
        CPU time is :attr:`cpu_seconds`)."""
        if not self._lock.acquire(blocking=False):
            return
        t0 = time.thread_time()
        try:
            journal, fd = self._journal, self._fd
            if journal is not None and journal.count and fd is not None and self._pid == _process_id and journal.due(time.time()):
                self._flush_journal(fd)
        except Exception:  # noqa: BLE001 - the flusher must outlive anything (a journal closed under it)
            pass
        finally:
            self.cpu_seconds += time.thread_time() - t0
            self._lock.release()

    def _journaled(self, fd: int, last: dict[str, Any], time: float, step: int, step_time: float | None, device_used: int | None) -> bool:
        """Store a repeat of ``last`` in the journal, where there is one and the line is a repeat's."""
        journal = self._journal
        if journal is None or self._on_written is not None or self._torn or not representable(time, step, step_time, device_used):
            return False  # (torn: the next line written starts with the newline that ends the torn one)
        encoder = self._encoder
        pieces = encoder.repeat_pieces(last, self.rank)
        if pieces is None:
            return False
        if pieces is not journal.pieces or journal.count >= journal.capacity:  # a new batch: the lines of the last one first
            self._flush_journal(fd)
            pieces = encoder.repeat_pieces(last, self.rank)  # (asked again: a failed write resets the encoder)
            if pieces is None or self._torn or self.path is None:
                return False
            self._journal_rec = last
            if not journal.begin(pieces, self.path, os.fstat(fd).st_size, time):
                return False
        journal.add(time, step, step_time, device_used)
        encoder.counted()
        if journal.due(time):
            self._flush_journal(fd)
        return True

    def put(self, record: dict[str, Any]) -> None:
        """Write a step record; a full disk or a closed file costs the record, never the training."""
        try:
            self.write(record)
        except (OSError, ValueError):
            self.failed_writes += 1

    def put_repeat(self, last: dict[str, Any], time: float, step: int, step_time: float | None, device_used: int | None) -> None:
        """:meth:`put` of a copy of ``last`` (the last step record handed over, never changed
        since) with these four figures: the same bytes, the same index entry, the same record for
        ``on_written``; where the encoder knows the line it repeats, the copy is never made."""
        try:
            with self._lock:
                fd = self._ready()
                if self._journaled(fd, last, time, step, step_time, device_used):
                    return
                self._flush_journal(fd)
                data = None if self._on_written is not None else self._encoder.encode_repeat(last, self.rank, time, step, step_time, device_used)
                if data is not None:
                    self._emit(fd, data, last, True)  # the index reads peak, reserved, tracked: last's
                    return
                rec = repeat_record(last, time, step, step_time, device_used)
                rec["rank"] = self.rank
                self._emit(fd, self._encoder.encode(rec, last), rec, True)
            if self._on_written is not None:
                self._on_written(rec)
        except (OSError, ValueError):
            self.failed_writes += 1

    def write_now(self, record: dict[str, Any]) -> None:
        """Write a record that must survive a crash (oom, warning, exit): errors reach the caller."""
        self.write(record)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is None or self._pid != _process_id:
                return  # never opened, or the parent's file inherited through fork: not ours to close
            journal = self._journal
            if journal is not None:
                try:
                    self._flush_journal(fd)
                finally:
                    self._journal = None
                    journal.close()
            if self.index is not None:
                self.index.close()
            try:
                os.fsync(fd)
            except OSError:
                pass
            try:
                os.close(fd)
            except OSError:
                pass


class TensorBoardWriter:
    """Writes step scalars to TensorBoard event files from a daemon thread (explicit API only).

    Under `memtop train` the launcher writes the events from the records instead (no protobuf
    work in the training process). If TensorBoard cannot be imported the writer stays silent.
    The training thread only appends to a deque; the thread takes the records every
    ``poll_secs``: a queue that woke the thread at every step cost the training thread 30-90 us
    a step (the condition's notify and the thread switch it causes; docs/performance.md).
    """

    MAX_PENDING = 10_000

    def __init__(self, logdir: Path, flush_secs: float = 5.0, poll_secs: float = 0.5) -> None:
        self.logdir = logdir
        self.flush_secs = flush_secs
        self.poll_secs = poll_secs
        self.error: str | None = None
        self._pending: deque[dict[str, Any]] = (
            deque()
        )  # append and popleft are thread-safe: no lock on the training thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memtop-tensorboard", daemon=True)
        self._thread.start()

    def add_step(self, record: dict[str, Any]) -> None:
        if len(self._pending) < self.MAX_PENDING:
            self._pending.append(record)
        # else TensorBoard falls behind rather than slowing training; the JSONL has every step

    def _take(self) -> list[dict[str, Any]]:
        pending, taken = self._pending, []
        while pending:
            taken.append(pending.popleft())
        return taken

    def _run(self) -> None:
        try:
            from memtop.runs.tensorboard import EventWriter

            writer = EventWriter(self.logdir, self.flush_secs)
        except Exception as exc:  # noqa: BLE001 - tensorboard missing or broken: JSONL still has everything
            self.error = f"TensorBoard events disabled: {exc}"
            while not self._stop.wait(self.poll_secs):
                self._take()
            return
        while True:
            stopping = self._stop.wait(self.poll_secs)
            for item in self._take():
                writer.add_step(item)
            if stopping:
                break
        writer.close()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
