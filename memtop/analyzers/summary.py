"""The run at a glance: what ran, where the peak was and what it was made of, the timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memtop.analyzers.series import RankSeries, median, present, quantile
from memtop.runs.format import CATEGORIES
from memtop.runs.reader import ExitRecord, OomRecord, Record, RunData, StepRecord
from memtop.runs.records import Highwater, LargeTensor, RunMeta
from memtop.runs.status import run_status

CPU_UNMEASURED = (
    "on CPU there is no allocator counter: the allocator peak, allocated/reserved, `other` "
    "(inputs, temporaries) and fragmentation cannot be measured; the peak shown is the tracked "
    "bytes (parameters + gradients + optimizer state + activations)"
)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    path: str
    command: list[str]
    cwd: str | None
    status: str
    exit_code: int | None
    started_at: float | None
    ended_at: float | None
    device_name: str | None
    device_kind: str  # "cuda", "cpu" or "unknown"
    device_total: int | None
    ranks: list[int]
    steps: int  # step records on the rank with the most
    first_step: int | None
    last_step: int | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True)
class CategoryShare:
    category: str
    bytes: int | None
    percent: float | None  # of the peak; None where not measurable
    highwater: int | None = None  # the category's largest value within the peak step (any moment); None: not recorded


@dataclass(frozen=True)
class Peak:
    """The largest step of the run (over all ranks) and its composition."""

    rank: int
    step: int
    index: int
    bytes: int
    measure: str  # "allocator_peak" (CUDA) or "tracked" (CPU: sum of the four tracked categories)
    categories: dict[str, int | None]
    breakdown: list[CategoryShare]
    tracked: int
    allocated: int | None
    reserved: int | None
    device_used: int | None
    device_total: int | None
    peak_point: str | None
    large_tensors: tuple[LargeTensor, ...]

    @property
    def percent_of_device(self) -> float | None:
        if not self.device_total:
            return None
        return 100.0 * self.bytes / self.device_total


@dataclass(frozen=True)
class SeriesStats:
    """Byte series hold ints (the median rounded); ``fragmentation_pct`` holds floats."""

    name: str
    first: float | None
    last: float | None
    min: float | None
    max: float | None
    median: float | None


@dataclass(frozen=True)
class Timeline:
    """Per-rank summary of the step series, with a few hundred points for a plot."""

    rank: int
    steps: int
    first_step: int
    last_step: int
    stats: list[SeriesStats]
    step_time_median: float | None
    step_time_mean: float | None
    step_time_p90: float | None
    points: dict[str, list[Any]] = field(default_factory=dict)


def _device_from_meta(meta: RunMeta | None) -> tuple[str | None, str, int | None]:
    if meta is not None and meta.devices:
        d = meta.devices[0]
        return d.name, d.kind, d.total_bytes
    return None, "unknown", None


def run_info(run: RunData, series: dict[int, RankSeries]) -> RunInfo:
    meta = run.meta
    name, kind, total = _device_from_meta(meta)
    if series:
        any_s = next(iter(series.values()))
        if kind == "unknown":
            kind = "cuda" if any_s.device.startswith("cuda") else ("cpu" if any_s.device == "cpu" else kind)
        total = total if total is not None else any_s.total()
    longest = max(series.values(), key=lambda s: s.total_steps) if series else None
    status = run_status(run.path, meta) if meta is not None else None
    if status is None:
        status = _status_from_records(run)
    return RunInfo(
        run_id=run.run_id,
        path=str(run.path),
        command=list(meta.command) if meta is not None else [],
        cwd=meta.cwd if meta is not None else None,
        status=status,
        exit_code=meta.exit_code if meta is not None else None,
        started_at=meta.started_at if meta is not None else None,
        ended_at=meta.ended_at if meta is not None else None,
        device_name=name,
        device_kind=kind,
        device_total=total,
        ranks=sorted(run.records),
        steps=longest.total_steps if longest else 0,
        first_step=longest.steps[0] if longest else None,
        last_step=longest.steps[-1] if longest else None,
    )


def _status_from_records(run: RunData) -> str:
    if any(True for _ in run.of_class(OomRecord)):
        return "oom"
    exits = list(run.of_class(ExitRecord))
    if exits:
        return "finished" if exits[-1].reason in ("normal", "max_steps") else "failed"
    return "unknown"


def _shares(categories: dict[str, int | None], total: int, has_allocator: bool, highwater: Highwater | None = None) -> list[CategoryShare]:
    hw = highwater._asdict() if highwater is not None else {}
    out = []
    for c in CATEGORIES:
        b = categories.get(c)
        pct = (100.0 * b / total) if (b is not None and total > 0) else None
        if c == "other" and not has_allocator:
            pct = None
        out.append(CategoryShare(c, b, pct, hw.get(c)))
    return out


def find_peak(series: dict[int, RankSeries]) -> Peak | None:
    """The step with the most memory over all ranks (allocator peak on CUDA, tracked bytes on CPU)."""
    best: tuple[int, int, RankSeries] | None = None
    for s in series.values():
        levels = s.levels()
        if not levels:
            continue
        i = max(range(len(levels)), key=levels.__getitem__)
        if best is None or levels[i] > best[0]:
            best = (levels[i], i, s)
    if best is None:
        return None
    level, i, s = best
    has_alloc = s.peak[i] is not None
    cats = {c: s.categories[c][i] for c in CATEGORIES}
    rec = s.records[i]
    return Peak(
        rank=s.rank,
        step=s.steps[i],
        index=i,
        bytes=level,
        measure="allocator_peak" if has_alloc else "tracked",
        categories=cats,
        breakdown=_shares(cats, level, has_alloc, rec.highwater),
        tracked=s.tracked[i],
        allocated=s.allocated[i],
        reserved=s.reserved[i],
        device_used=s.device_used[i],
        device_total=s.device_total[i] if s.device_total[i] is not None else s.total(),
        peak_point=rec.peak_point,
        large_tensors=large_tensors(rec),
    )


def large_tensors(rec: Record) -> tuple[LargeTensor, ...]:
    """The record's large tensors (a step or an ``oom`` record; none for other records)."""
    if isinstance(rec, (StepRecord, OomRecord)):
        return rec.large_tensors
    return ()


def _stats(name: str, values: list[int | None] | list[int] | list[float | None]) -> SeriesStats | None:
    vals = present(values)  # type: ignore[arg-type]
    if not vals:
        return None
    first = next(float(v) for v in values if v is not None)
    last = next(float(v) for v in reversed(values) if v is not None)
    med = median(vals)
    if name.endswith("_pct"):
        return SeriesStats(name, first, last, min(vals), max(vals), med)
    return SeriesStats(name, int(first), int(last), int(min(vals)), int(max(vals)), round(med) if med is not None else None)


def _downsample(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    stride = n / limit
    idx = sorted({int(k * stride) for k in range(limit)} | {n - 1})
    return idx


def timeline(s: RankSeries, max_points: int = 240) -> Timeline:
    cols: list[tuple[str, list[Any]]] = [
        ("peak", s.peak),
        ("allocated", s.allocated),
        ("reserved", s.reserved),
        ("tracked", s.tracked),
        *((c, s.categories[c]) for c in CATEGORIES),
        ("device_used", s.device_used),
        ("fragmentation_pct", s.fragmentation_pct),
    ]
    stats = [st for name, col in cols if (st := _stats(name, col)) is not None]
    times = present(s.step_time)
    idx = _downsample(len(s.steps), max_points)
    points: dict[str, list[Any]] = {"step": [s.steps[i] for i in idx]}
    for name, col in cols:
        if any(col[i] is not None for i in idx):
            points[name] = [col[i] for i in idx]
    return Timeline(
        rank=s.rank,
        steps=len(s.steps),
        first_step=s.steps[0],
        last_step=s.steps[-1],
        stats=stats,
        step_time_median=median(times),
        step_time_mean=(sum(times) / len(times)) if times else None,
        step_time_p90=quantile(times, 0.9),
        points=points,
    )
