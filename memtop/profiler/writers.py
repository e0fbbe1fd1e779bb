"""Where records go: the rank's JSONL file (flushed per record) and TensorBoard (off-thread)."""

from __future__ import annotations

import collections
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any


class JsonlWriter:
    """Appends one JSON object per line and flushes it, so a crash loses nothing written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8", buffering=1024 * 64)  # noqa: SIM115 - lives as long as the run
        self._lock = threading.Lock()
        self._large: tuple[object, str] = (None, "[]")

    def write(self, record: dict[str, Any], flush: bool = True) -> None:
        large = record.get("large_tensors")
        if isinstance(large, list) and large:
            # step records repeat the same large-tensor list for long stretches: serialize it once
            if large is not self._large[0]:
                self._large = (large, json.dumps(large, separators=(",", ":"), allow_nan=False, default=str))
            rest = {k: v for k, v in record.items() if k != "large_tensors"}
            head = json.dumps(rest, separators=(",", ":"), allow_nan=False, default=str)
            line = f'{head[:-1]},"large_tensors":{self._large[1]}}}'
        else:
            line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)
        with self._lock:
            self._fh.write(line + "\n")
            if flush:
                self._fh.flush()

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except (OSError, ValueError):
                pass
            self._fh.close()


class BackgroundJsonlWriter:
    """A :class:`JsonlWriter` drained by a thread every ``interval`` seconds.

    The training thread only appends the record to a deque (no lock, no wake-up): waking a
    writer thread per record costs the training thread a GIL hand-off each step, measured at
    several times the cost of the serialization itself. The thread writes and flushes whatever
    accumulated, mostly while the training thread is inside torch ops with the GIL released.
    Records that matter at a crash (oom, warning, exit) use :meth:`write_now`, which writes the
    queued ones first so the file stays in order.
    """

    def __init__(self, path: Path, on_written: Any = None, interval: float = 0.2) -> None:
        self._writer = JsonlWriter(path)
        self._on_written = on_written
        self._interval = interval
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._order = threading.Lock()
        self._stop = threading.Event()
        self.cpu_seconds = 0.0  # this thread's CPU time: part of memtop's cost to the process
        self._thread = threading.Thread(target=self._run, name="memtop-records", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self._writer.path

    def put(self, record: dict[str, Any]) -> None:
        self._pending.append(record)

    def _drain(self) -> None:
        with self._order:
            while self._pending:
                record = self._pending.popleft()
                try:
                    self._writer.write(record, flush=False)  # one flush per drain: a write(2) per record cost more than the JSON
                    if self._on_written is not None:
                        self._on_written(record)
                except (OSError, ValueError):
                    pass  # disk full or closed: training goes on; the file has what it could take
            try:
                self._writer.flush()
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._pending:
                t0 = time.thread_time()
                self._drain()
                self.cpu_seconds += time.thread_time() - t0

    def write_now(self, record: dict[str, Any]) -> None:
        self._drain()
        with self._order:
            self._writer.write(record)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._drain()
        self._writer.close()


class TensorBoardWriter:
    """Writes step scalars to TensorBoard event files from a daemon thread (explicit API only).

    Under `memtop train` the launcher writes the events from the records instead (no protobuf
    work in the training process). If TensorBoard cannot be imported the writer stays silent.
    """

    _STOP = object()

    def __init__(self, logdir: Path, flush_secs: float = 5.0) -> None:
        self.logdir = logdir
        self.flush_secs = flush_secs
        self.error: str | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._run, name="memtop-tensorboard", daemon=True)
        self._thread.start()

    def add_step(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            pass  # TensorBoard falls behind rather than slowing training; the JSONL has every step

    def _run(self) -> None:
        try:
            from memtop.runs.tensorboard import EventWriter

            writer = EventWriter(self.logdir, self.flush_secs)
        except Exception as exc:  # noqa: BLE001 - tensorboard missing or broken: JSONL still has everything
            self.error = f"TensorBoard events disabled: {exc}"
            while self._queue.get() is not self._STOP:
                pass
            return
        while True:
            item = self._queue.get()
            if item is self._STOP:
                break
            if isinstance(item, dict):
                writer.add_step(item)
        writer.close()

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._queue.put(self._STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
