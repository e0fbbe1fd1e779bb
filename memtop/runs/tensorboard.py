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
from memtop.runs.recordfiles import file_stem

_MB = float(fmt.MB)


def _number(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _scalars(cats: Mapping[str, object], figures: tuple[object, object, object], frag: object, large: int | None) -> dict[str, float]:
    """The spec's TensorBoard tags (null or non-finite figures are left out)."""
    out: dict[str, float] = {}
    for cat in fmt.CATEGORIES:
        v = cats.get(cat)
        if _number(v):
            out[fmt.tb_category_tag(cat)] = v / _MB
    for v, tag in zip(figures, (fmt.TB_ALLOCATED, fmt.TB_RESERVED, fmt.TB_PEAK), strict=True):
        if _number(v):
            out[tag] = v / _MB
    if _number(frag):
        out[fmt.TB_FRAGMENTATION] = float(frag)
    if large is not None:
        out[fmt.TB_LARGE_COUNT] = float(large)
    return out


def scalars_for(rec: StepRecord) -> dict[str, float]:
    """The spec's TensorBoard tags for one decoded step record."""
    large = len(rec.large_tensors) if rec.has_large_tensors else None
    return _scalars(rec.categories.as_dict(), (rec.allocated, rec.reserved, rec.peak), rec.fragmentation_pct, large)


def scalars_for_written(rec: Mapping[str, Any]) -> dict[str, float]:
    """The same tags for a step record as the hook's writer builds it (a dict, not yet a line)."""
    cats = rec.get("categories")
    large = rec.get("large_tensors")
    return _scalars(
        cats if isinstance(cats, dict) else {},
        (rec.get("allocated"), rec.get("reserved"), rec.get("peak")),
        rec.get("fragmentation_pct"),
        len(large) if isinstance(large, list) else None,
    )


class EventWriter:
    """One TensorBoard event file writer for one rank's records."""

    def __init__(self, logdir: Path, flush_secs: float = 5.0) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(logdir), flush_secs=int(max(1, flush_secs)))

    def add_step(self, rec: Mapping[str, Any]) -> None:
        """A step record from the hook's writer, in the training process (see :func:`scalars_for_written`)."""
        step = rec.get("step")
        if isinstance(step, int):
            wall = rec.get("time")
            self.add_scalars(step, float(wall) if _number(wall) else None, scalars_for_written(rec))

    def add_record(self, rec: StepRecord) -> None:
        """A decoded step record (the follower, ``memtop export``)."""
        self.add_scalars(rec.step, rec.time, scalars_for(rec))

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
    """Tails a run's record files and writes their steps to ``<run>/tensorboard/rank<N>/`` (a
    ``proc<pid>.jsonl``'s to ``tensorboard/proc<pid>/``)."""

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
                    writer = self._writers[rank] = EventWriter(self.run_dir / fmt.TENSORBOARD_DIR / file_stem(rank))
                writer.add_record(rec)
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
