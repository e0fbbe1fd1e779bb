"""TensorBoard event files from step records, with the tags the field already uses.

Written with the tensorboard package alone (no torch), one event per step holding all of that
step's scalars. `memtop train` runs a :class:`RunFollower` in its own process, so the training
process never spends time on protobufs and checksums; the explicit API without `memtop train`
writes from a thread of the training process instead.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from memtop.runs import format as fmt
from memtop.runs.reader import RankTail, StepRecord, rank_files

_MB = float(fmt.MB)


def _number(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def scalars_for(rec: Mapping[str, Any]) -> dict[str, float]:
    """The spec's TensorBoard tags for one step record (null or non-finite figures are left out)."""
    out: dict[str, float] = {}
    cats = rec.get("categories")
    if isinstance(cats, dict):
        for cat in fmt.CATEGORIES:
            v = cats.get(cat)
            if _number(v):
                out[fmt.tb_category_tag(cat)] = v / _MB
    for key, tag in (("allocated", fmt.TB_ALLOCATED), ("reserved", fmt.TB_RESERVED), ("peak", fmt.TB_PEAK)):
        v = rec.get(key)
        if _number(v):
            out[tag] = v / _MB
    frag = rec.get("fragmentation_pct")
    if _number(frag):
        out[fmt.TB_FRAGMENTATION] = float(frag)
    large = rec.get("large_tensors")
    if isinstance(large, list):
        out[fmt.TB_LARGE_COUNT] = float(len(large))
    return out


class EventWriter:
    """One TensorBoard event file writer for one rank's records."""

    def __init__(self, logdir: Path, flush_secs: float = 5.0) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(logdir), flush_secs=int(max(1, flush_secs)))

    def add_step(self, rec: Mapping[str, Any]) -> None:
        step = rec.get("step")
        if isinstance(step, int):
            wall = rec.get("time")
            self.add_scalars(step, float(wall) if _number(wall) else None, scalars_for(rec))

    def add_scalars(self, step: int, wall: float | None, scalars: dict[str, float]) -> None:
        """One event holding all of a step's scalars."""
        from tensorboard.compat.proto import event_pb2, summary_pb2

        values = [summary_pb2.Summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()]
        event = event_pb2.Event(
            wall_time=wall if wall is not None else time.time(),
            step=step,
            summary=summary_pb2.Summary(value=values),
        )
        self._writer.add_event(event)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class RunFollower:
    """Tails a run's rank files and writes their steps to ``<run>/tensorboard/rank<N>/``."""

    def __init__(self, run_dir: Path, interval: float = 1.0) -> None:
        self.run_dir = run_dir
        self.interval = interval
        self.error: str | None = None
        self._tails: dict[int, RankTail] = {}
        self._writers: dict[int, EventWriter] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memtop-tensorboard", daemon=True)

    def start(self) -> RunFollower:
        self._thread.start()
        return self

    def poll(self, final: bool = False) -> int:
        written = 0
        for rank, path in rank_files(self.run_dir).items():
            tail = self._tails.setdefault(rank, RankTail(path))
            for rec in tail.poll(final=final):
                if not isinstance(rec, StepRecord):
                    continue
                writer = self._writers.get(rank)
                if writer is None:
                    writer = self._writers[rank] = EventWriter(self.run_dir / fmt.TENSORBOARD_DIR / f"rank{rank}")
                writer.add_step(rec.doc)  # validated by the decoder
                written += 1
        return written

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.poll()
        except Exception as exc:  # noqa: BLE001 - TensorBoard is a by-product; the JSONL stays the record
            self.error = f"TensorBoard events stopped: {exc}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10.0)
        if self.error is None:
            try:
                self.poll(final=True)
            except Exception as exc:  # noqa: BLE001 - as above
                self.error = f"TensorBoard events stopped: {exc}"
        for writer in self._writers.values():
            writer.close()
