"""Rows and scalars for exporting a run (CSV, TensorBoard): one entry per step record."""

from __future__ import annotations

from collections.abc import Iterator

from memtop.analyzers.series import as_float, as_int
from memtop.runs import format as fmt
from memtop.runs.reader import Record, RunData
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
)


def _steps(run: RunData) -> Iterator[tuple[int, Record]]:
    for rank in sorted(run.records):
        seen: dict[int, Record] = {}
        for rec in run.records[rank]:
            if rec.get("type") == "step" and isinstance(rec.get("step"), int) and not isinstance(rec.get("step"), bool):
                seen[rec["step"]] = rec
        for step in sorted(seen):
            yield rank, seen[step]


def csv_rows(run: RunData) -> Iterator[list[str]]:
    """CSV rows (strings; empty for null) in ``CSV_COLUMNS`` order, by rank then step."""
    for rank, rec in _steps(run):
        cats = rec.get("categories") if isinstance(rec.get("categories"), dict) else {}
        large = rec.get("large_tensors")
        values: dict[str, object] = {
            "rank": rank,
            "step": rec.get("step"),
            "time": as_float(rec.get("time")),
            "step_time": as_float(rec.get("step_time")),
            "device": rec.get("device") if isinstance(rec.get("device"), str) else None,
            "allocated": as_int(rec.get("allocated")),
            "reserved": as_int(rec.get("reserved")),
            "peak": as_int(rec.get("peak")),
            "tracked": as_int(rec.get("tracked")),
            "fragmentation_bytes": as_int(rec.get("fragmentation_bytes")),
            "fragmentation_pct": as_float(rec.get("fragmentation_pct")),
            "inactive_split_bytes": as_int(rec.get("inactive_split_bytes")),
            "device_used": as_int(rec.get("device_used")),
            "device_total": as_int(rec.get("device_total")),
            "peak_point": rec.get("peak_point") if isinstance(rec.get("peak_point"), str) else None,
            "large_tensor_count": len(large) if isinstance(large, list) else None,
        }
        for c in fmt.CATEGORIES:
            values[c] = as_int(cats.get(c)) if isinstance(cats, dict) else None
        yield ["" if values[k] is None else str(values[k]) for k in CSV_COLUMNS]


def tensorboard_points(run: RunData) -> Iterator[tuple[int, int, float | None, dict[str, float]]]:
    """``(rank, step, walltime, {tag: value})`` with the spec's tags; null figures are left out."""
    for rank, rec in _steps(run):
        yield rank, int(rec["step"]), as_float(rec.get("time")), scalars_for(rec)
