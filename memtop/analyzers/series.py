"""Step records turned into per-rank columns, the shape every analyzer works on.

Records arrive typed and validated (:mod:`memtop.runs.decode`): every figure already is an
``int``/``float`` or ``None``, so this module only lays them out as columns.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from memtop.runs.format import CATEGORIES
from memtop.runs.reader import Record, RunData, StepRecord

TRACKED_CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations")


@dataclass
class RankSeries:
    """One rank's step records as parallel columns (index ``i`` is the ``i``-th step record)."""

    rank: int
    device: str = "unknown"
    steps: list[int] = field(default_factory=list)
    time: list[float | None] = field(default_factory=list)
    step_time: list[float | None] = field(default_factory=list)
    allocated: list[int | None] = field(default_factory=list)
    reserved: list[int | None] = field(default_factory=list)
    peak: list[int | None] = field(default_factory=list)
    tracked: list[int] = field(default_factory=list)
    categories: dict[str, list[int | None]] = field(default_factory=lambda: {c: [] for c in CATEGORIES})
    fragmentation_bytes: list[int | None] = field(default_factory=list)
    fragmentation_pct: list[float | None] = field(default_factory=list)
    inactive_split_bytes: list[int | None] = field(default_factory=list)
    device_used: list[int | None] = field(default_factory=list)
    device_total: list[int | None] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)
    sampled: bool = False  # True when only a subset of the steps was decoded (long runs)
    total_steps: int = 0  # step records in the file (all of them, also when sampled)
    cache_releases: int | None = None  # exact count over all steps when sampled (else computed)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def has_allocator(self) -> bool:
        """True when the device has an allocator counter (CUDA): peak/allocated are figures."""
        return any(v is not None for v in self.peak)

    def level(self, i: int) -> int:
        """The step's memory level: the allocator peak where measured, else the tracked bytes."""
        p = self.peak[i]
        return p if p is not None else self.tracked[i]

    def levels(self) -> list[int]:
        return [self.level(i) for i in range(len(self.steps))]

    def total(self) -> int | None:
        """The device's capacity as the records report it (last known)."""
        for v in reversed(self.device_total):
            if v is not None:
                return v
        return None


def _append(s: RankSeries, rec: StepRecord) -> None:
    cats = rec.categories
    tracked = rec.tracked if rec.tracked is not None else cats.tracked()
    s.steps.append(rec.step)
    s.time.append(rec.time)
    s.step_time.append(rec.step_time)
    s.allocated.append(rec.allocated)
    s.reserved.append(rec.reserved)
    s.peak.append(rec.peak)
    s.tracked.append(tracked)
    for c in CATEGORIES:
        s.categories[c].append(getattr(cats, c))
    s.fragmentation_bytes.append(rec.fragmentation_bytes)
    s.fragmentation_pct.append(rec.fragmentation_pct)
    s.inactive_split_bytes.append(rec.inactive_split_bytes)
    s.device_used.append(rec.device_used)
    s.device_total.append(rec.device_total)
    s.records.append(rec)
    if rec.device is not None:
        s.device = rec.device


def build_series(rank: int, records: Sequence[Record]) -> RankSeries | None:
    """One rank's series from its step records (other types are ignored); None without steps.

    Records are put in step order; a step written twice (a restarted writer) keeps the last.
    """
    steps = [r for r in records if isinstance(r, StepRecord)]
    if not steps:
        return None
    s = RankSeries(rank=rank)
    for rec in _dedupe_sorted(steps):
        _append(s, rec)
    if not s.steps:
        return None
    s.total_steps = len(s.steps)
    return s


def rank_series(run: RunData) -> dict[int, RankSeries]:
    """``{rank: RankSeries}`` for every rank with at least one usable step record."""
    out: dict[int, RankSeries] = {}
    for rank, recs in run.records.items():
        s = build_series(rank, recs)
        if s is not None:
            out[rank] = s
    return out


def count_releases(reserved: list[int | None], drop: float = 0.8) -> int:
    """Steps where reserved memory fell below ``drop`` times the previous figure (empty_cache)."""
    releases = 0
    prev: int | None = None
    for r in reserved:
        if r is not None and prev is not None and prev > 0 and r < drop * prev:
            releases += 1
        if r is not None:
            prev = r
    return releases


def _dedupe_sorted(steps: list[StepRecord]) -> list[StepRecord]:
    if all(a.step < b.step for a, b in zip(steps, steps[1:], strict=False)):
        return steps
    by_step = {r.step: r for r in steps}
    return [by_step[k] for k in sorted(by_step)]


def median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0 < q < 1, in hundredths), interpolated between the values as
    ``statistics.quantiles(..., method="inclusive")`` does (the minimum at 0, the maximum at 1)."""
    if len(values) < 2:
        return float(values[0]) if values else None
    cut = min(99, max(1, round(q * 100)))
    return float(statistics.quantiles(values, n=100, method="inclusive")[cut - 1])


def present(values: list[int | None] | list[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None]
