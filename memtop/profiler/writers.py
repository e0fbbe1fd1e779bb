"""Where records go: the rank's JSONL file (flushed per record) and TensorBoard (off-thread)."""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path
from typing import Any


class JsonlWriter:
    """Appends one JSON object per line and flushes it, so a crash loses nothing written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8", buffering=1024 * 64)  # noqa: SIM115 - lives as long as the run
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)
        with self._lock:
            self._fh.write(line + "\n")
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
    """A :class:`JsonlWriter` fed from a queue, so serializing never runs on the training thread.

    Step records go through the queue (written and flushed within milliseconds); records that
    matter at a crash (oom, warning, exit) use :meth:`write_now`, which first drains the queue so
    the file stays in order.
    """

    _STOP = object()

    def __init__(self, path: Path, on_written: Any = None) -> None:
        self._writer = JsonlWriter(path)
        self._on_written = on_written
        self._queue: queue.Queue[object] = queue.Queue(maxsize=100_000)
        self._order = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="memtop-records", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self._writer.path

    def put(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.write_now(record)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                self._queue.task_done()
                return
            try:
                if isinstance(item, dict):
                    with self._order:
                        self._writer.write(item)
                    if self._on_written is not None:
                        self._on_written(item)
            except (OSError, ValueError):
                pass  # disk full or closed: the run keeps training; the file has what it could take
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        if self._thread.is_alive():
            self._queue.join()

    def write_now(self, record: dict[str, Any]) -> None:
        self.drain()
        with self._order:
            self._writer.write(record)

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join(timeout)
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
