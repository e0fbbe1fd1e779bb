"""Where records go: the rank's JSONL file (flushed per record) and TensorBoard (off-thread)."""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path
from typing import Any

from memtop.runs import format as fmt


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


_MB = float(fmt.MB)


def tensorboard_scalars(rec: dict[str, Any]) -> dict[str, float]:
    """The spec's TensorBoard tags for one step record (null figures are left out)."""
    out: dict[str, float] = {}
    cats = rec.get("categories") or {}
    for cat in fmt.CATEGORIES:
        v = cats.get(cat)
        if isinstance(v, (int, float)):
            out[fmt.tb_category_tag(cat)] = v / _MB
    for key, tag in (("allocated", fmt.TB_ALLOCATED), ("reserved", fmt.TB_RESERVED), ("peak", fmt.TB_PEAK)):
        v = rec.get(key)
        if isinstance(v, (int, float)):
            out[tag] = v / _MB
    frag = rec.get("fragmentation_pct")
    if isinstance(frag, (int, float)):
        out[fmt.TB_FRAGMENTATION] = float(frag)
    large = rec.get("large_tensors")
    if isinstance(large, list):
        out[fmt.TB_LARGE_COUNT] = float(len(large))
    return out


class TensorBoardWriter:
    """Writes step scalars to TensorBoard event files from a daemon thread.

    The training thread only puts the record on a queue; building protobufs and writing happen
    elsewhere. If TensorBoard cannot be imported the writer stays silent (the JSONL is the record).
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
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(self.logdir), flush_secs=int(max(1, self.flush_secs)))
        except Exception as exc:  # noqa: BLE001 - tensorboard missing or broken: JSONL still has everything
            self.error = f"TensorBoard events disabled: {exc}"
            while self._queue.get() is not self._STOP:
                pass
            return
        while True:
            item = self._queue.get()
            if item is self._STOP:
                break
            if not isinstance(item, dict):
                continue
            step = int(item.get("step", 0))
            wall = item.get("time")
            for tag, value in tensorboard_scalars(item).items():
                writer.add_scalar(tag, value, global_step=step, walltime=wall)
        writer.flush()
        writer.close()

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._queue.put(self._STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
