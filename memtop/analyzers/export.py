"""Rows and scalars for exporting a run (CSV, TensorBoard): one entry per step record."""

from __future__ import annotations

from collections.abc import Iterator

from memtop.runs import format as fmt
from memtop.runs.reader import RunData, StepRecord
from memtop.runs.recordfiles import file_stem, is_rank
from memtop.runs.tensorboard import scalars_for

CSV_COLUMNS = (
    "rank",
    "step",
    "time",
    "step_time",
    "device",
    "allocated",
    "reserved",
    "peak",
    "tracked",
    *fmt.CATEGORIES,
    "fragmentation_bytes",
    "fragmentation_pct",
    "inactive_split_bytes",
    "device_used",
    "device_total",
    "peak_point",
    "large_tensor_count",
    "file",  # the record file: rank<N> or proc<pid> (a process of the run without a rank of its own)
)


def _steps(run: RunData) -> Iterator[tuple[int, StepRecord]]:
    for rank in sorted(run.records):
        seen = {rec.step: rec for rec in run.records[rank] if isinstance(rec, StepRecord)}
        for step in sorted(seen):
            yield rank, seen[step]


def csv_rows(run: RunData) -> Iterator[list[str]]:
    """CSV rows (strings; empty for null) in ``CSV_COLUMNS`` order, by rank then step (the
    processes without a rank after the ranks; their ``rank`` is the one their records carry)."""
    for key, rec in _steps(run):
        values: dict[str, object] = {
            "rank": key if is_rank(key) else rec.rank,
            "file": file_stem(key),
            "step": rec.step,
            "time": rec.time,
            "step_time": rec.step_time,
            "device": rec.device,
            "allocated": rec.allocated,
            "reserved": rec.reserved,
            "peak": rec.peak,
            "tracked": rec.tracked,
            "fragmentation_bytes": rec.fragmentation_bytes,
            "fragmentation_pct": rec.fragmentation_pct,
            "inactive_split_bytes": rec.inactive_split_bytes,
            "device_used": rec.device_used,
            "device_total": rec.device_total,
            "peak_point": rec.peak_point,
            "large_tensor_count": len(rec.large_tensors) if rec.has_large_tensors else None,
        }
        for c in fmt.CATEGORIES:
            values[c] = getattr(rec.categories, c)
        yield ["" if values[k] is None else str(values[k]) for k in CSV_COLUMNS]


def tensorboard_points(run: RunData) -> Iterator[tuple[int, int, float | None, dict[str, float]]]:
    """``(file key, step, walltime, {tag: value})`` with the spec's tags; null figures are left out."""
    for rank, rec in _steps(run):
        yield rank, rec.step, rec.time, scalars_for(rec)
