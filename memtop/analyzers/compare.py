"""Before/after: two runs side by side, category by category, with differences."""

from __future__ import annotations

from dataclasses import dataclass

from memtop.analyzers.fragmentation import FragmentationReport
from memtop.analyzers.fragmentation import analyze as analyze_fragmentation
from memtop.analyzers.series import RankSeries, median, present
from memtop.analyzers.summary import Peak, RunInfo, find_peak, run_info
from memtop.runs.format import CATEGORIES
from memtop.runs.reader import RunData


@dataclass(frozen=True)
class Row:
    name: str
    unit: str  # "bytes", "percent", "seconds", "steps"
    a: float | None
    b: float | None

    @property
    def diff(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def diff_pct(self) -> float | None:
        """The change in percent of A; None where a percentage says nothing (from or to zero)."""
        d = self.diff
        if d is None or not self.a or not self.b:
            return None
        return 100.0 * d / self.a

    @property
    def note(self) -> str:
        """``"gone"`` for a figure that went to zero (checkpointed activations), ``"new"`` for one
        that came from zero; else empty."""
        if self.a is None or self.b is None:
            return ""
        if self.a > 0 and self.b == 0:
            return "gone"
        if self.a == 0 and self.b > 0:
            return "new"
        return ""


@dataclass(frozen=True)
class Comparison:
    a: RunInfo
    b: RunInfo
    rows: list[Row]
    measure_a: str | None
    measure_b: str | None
    notes: list[str]


def _step_time(series: dict[int, RankSeries]) -> float | None:
    times = [t for s in series.values() for t in present(s.step_time)]
    return median(times)


def compare(run_a: RunData, series_a: dict[int, RankSeries], run_b: RunData, series_b: dict[int, RankSeries]) -> Comparison:
    info_a, info_b = run_info(run_a, series_a), run_info(run_b, series_b)
    pa, pb = find_peak(series_a), find_peak(series_b)
    fa, fb = analyze_fragmentation(series_a), analyze_fragmentation(series_b)
    rows = [Row("peak", "bytes", _b(pa), _b(pb))]
    for c in CATEGORIES:
        rows.append(Row(c, "bytes", _cat(pa, c), _cat(pb, c)))
    rows.append(Row("tracked", "bytes", pa.tracked if pa else None, pb.tracked if pb else None))
    rows.append(Row("reserved (max)", "bytes", fa.reserved_max, fb.reserved_max))
    rows.append(Row("fragmentation (mean)", "percent", _frag(fa), _frag(fb)))
    rows.append(Row("device used (max)", "bytes", _used(series_a), _used(series_b)))
    rows.append(Row("step time (median)", "seconds", _step_time(series_a), _step_time(series_b)))
    rows.append(Row("steps", "steps", float(info_a.steps), float(info_b.steps)))
    notes = []
    ma, mb = (pa.measure if pa else None), (pb.measure if pb else None)
    if ma and mb and ma != mb:
        notes.append(f"the peaks measure different things ({ma} vs {mb}): compare the categories")
    if info_a.device_kind != info_b.device_kind:
        notes.append(f"different devices: {info_a.device_kind} vs {info_b.device_kind}")
    if pa is not None and pb is not None and pa.peak_point != pb.peak_point:
        notes.append(f"the peak is at {pa.peak_point} in A and at {pb.peak_point} in B")
    return Comparison(info_a, info_b, rows, ma, mb, notes)


def _b(p: Peak | None) -> float | None:
    return float(p.bytes) if p else None


def _cat(p: Peak | None, c: str) -> float | None:
    if p is None:
        return None
    v = p.categories.get(c)
    return float(v) if v is not None else None


def _frag(f: FragmentationReport) -> float | None:
    return f.percent_mean if f.measurable else None


def _used(series: dict[int, RankSeries]) -> float | None:
    vals = [v for s in series.values() for v in s.device_used if v is not None]
    return float(max(vals)) if vals else None


def to_json(c: Comparison) -> dict[str, object]:
    return {
        "a": {"id": c.a.run_id, "path": c.a.path, "command": c.a.command, "status": c.a.status, "device_kind": c.a.device_kind, "peak_measure": c.measure_a},
        "b": {"id": c.b.run_id, "path": c.b.path, "command": c.b.command, "status": c.b.status, "device_kind": c.b.device_kind, "peak_measure": c.measure_b},
        "rows": [{"name": r.name, "unit": r.unit, "a": r.a, "b": r.b, "diff": r.diff, "diff_pct": r.diff_pct, "note": r.note} for r in c.rows],
        "notes": c.notes,
    }
