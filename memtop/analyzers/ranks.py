"""Imbalance across ranks: does one rank hold (or wait for) much more than the others?"""

from __future__ import annotations

from dataclasses import dataclass

from memtop.analyzers.series import RankSeries, median, present
from memtop.units import fmt_bytes as _size

IMBALANCED_PCT = 10.0


@dataclass(frozen=True)
class RankRow:
    rank: int
    device: str
    peak_bytes: int
    peak_step: int
    steps: int
    step_time_median: float | None


@dataclass(frozen=True)
class RankReport:
    rows: list[RankRow]
    heaviest: int
    lightest: int
    spread_bytes: int  # heaviest peak - lightest peak
    spread_pct: float  # of the heaviest peak
    slowest: int | None
    step_time_spread_pct: float | None
    verdict: str  # "balanced" or "imbalanced"
    message: str


def analyze(series: dict[int, RankSeries]) -> RankReport | None:
    """None for a single-rank run."""
    if len(series) < 2:
        return None
    rows = []
    for s in series.values():
        levels = s.levels()
        i = max(range(len(levels)), key=levels.__getitem__)
        rows.append(RankRow(s.rank, s.device, levels[i], s.steps[i], s.total_steps or len(s.steps), median(present(s.step_time))))
    rows.sort(key=lambda r: r.rank)
    heavy = max(rows, key=lambda r: r.peak_bytes)
    light = min(rows, key=lambda r: r.peak_bytes)
    spread = heavy.peak_bytes - light.peak_bytes
    pct = 100.0 * spread / heavy.peak_bytes if heavy.peak_bytes else 0.0
    timed = [r for r in rows if r.step_time_median is not None]
    slow = max(timed, key=lambda r: r.step_time_median or 0.0) if timed else None
    fast = min(timed, key=lambda r: r.step_time_median or 0.0) if timed else None
    t_pct = None
    if slow and fast and slow.step_time_median:
        t_pct = 100.0 * ((slow.step_time_median or 0.0) - (fast.step_time_median or 0.0)) / slow.step_time_median
    imbalanced = pct >= IMBALANCED_PCT or (t_pct is not None and t_pct >= IMBALANCED_PCT)
    if spread == 0:
        msg = f"ranks are balanced: every rank peaks at the same {_size(heavy.peak_bytes)}"
    elif pct < IMBALANCED_PCT:
        msg = f"ranks are balanced: rank {heavy.rank} peaks {pct:.1f}% above rank {light.rank}"
    else:
        msg = f"rank {heavy.rank} peaks {pct:.1f}% above rank {light.rank}"
    if t_pct is not None and slow is not None:
        msg += f"; rank {slow.rank} is the slowest ({t_pct:.1f}% slower steps than the fastest)"
    return RankReport(
        rows=rows,
        heaviest=heavy.rank,
        lightest=light.rank,
        spread_bytes=spread,
        spread_pct=pct,
        slowest=slow.rank if slow else None,
        step_time_spread_pct=t_pct,
        verdict="imbalanced" if imbalanced else "balanced",
        message=msg,
    )
