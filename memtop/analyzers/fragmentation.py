"""Allocator fragmentation: how much reserved memory holds nothing live, its trend, what to reclaim.

``fragmentation_bytes = reserved - allocated`` (the run format's figure, taken at the end of each
step) is memory the caching allocator keeps but no tensor uses *at that moment*; much of it is the
step's freed activations, cached for the next step. What is really wasted is what the allocator
reserved beyond the step's live peak: ``reserved - peak`` ("waste"). That is what
``expandable_segments:True`` gives back (segments grow in place, so freed memory is reusable for
any size instead of being split into blocks too small for the next large request, which
``inactive_split_bytes`` counts). The verdict and the estimate use the waste; without a peak they
fall back to the smaller of the split and fragmentation figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from memtop.analyzers.fit import fit_line
from memtop.analyzers.series import RankSeries, count_releases, median, present

HIGH_PCT = 20.0
MODERATE_PCT = 8.0


@dataclass(frozen=True)
class FragmentationReport:
    measurable: bool
    rank: int | None
    percent_last: float | None
    percent_mean: float | None
    percent_max: float | None
    pct_per_1k_steps: float | None  # fitted change of the percentage per 1000 steps
    trend: str | None  # "rising", "flat", "falling"
    bytes_at_peak_reserved: int | None  # fragmentation_bytes at the step with the most reserved
    reserved_max: int | None
    waste_bytes: int | None  # reserved - peak at the step with the most reserved
    waste_pct_median: float | None  # median over steps of (reserved - peak) / reserved * 100
    inactive_split_bytes: int | None  # at the step with the most reserved
    expandable_segments_saving: int | None
    saving_basis: str | None  # "reserved_minus_peak" or "inactive_split"
    cache_releases: int  # steps where reserved dropped by over 20%: empty_cache() calls
    verdict: str  # "high", "moderate", "low", "not_measurable"
    message: str


def _not_measurable(reason: str) -> FragmentationReport:
    return FragmentationReport(
        measurable=False,
        rank=None,
        percent_last=None,
        percent_mean=None,
        percent_max=None,
        pct_per_1k_steps=None,
        trend=None,
        bytes_at_peak_reserved=None,
        reserved_max=None,
        waste_bytes=None,
        waste_pct_median=None,
        inactive_split_bytes=None,
        expandable_segments_saving=None,
        saving_basis=None,
        cache_releases=0,
        verdict="not_measurable",
        message=reason,
    )


def analyze_rank(s: RankSeries) -> FragmentationReport:
    pcts = present(s.fragmentation_pct)
    reserved = [(i, r) for i, r in enumerate(s.reserved) if r is not None]
    if not pcts or not reserved:
        return _not_measurable(
            "fragmentation cannot be measured on CPU (no caching allocator)"
            if not s.has_allocator
            else "no reserved/fragmentation figures in the records"
        )
    i_max, r_max = max(reserved, key=lambda p: p[1])
    frag = s.fragmentation_bytes[i_max]
    split = s.inactive_split_bytes[i_max]
    peak_here = s.peak[i_max]
    waste = max(0, r_max - peak_here) if peak_here is not None else None
    wastes = [100.0 * max(0, r - p) / r for r, p in zip(s.reserved, s.peak, strict=True) if r and p is not None]
    saving: int | None
    basis: str | None
    if waste is not None:
        saving, basis = waste, "reserved_minus_peak"
    elif split is not None:
        saving, basis = (min(split, frag) if frag is not None else split), "inactive_split"
    else:
        saving, basis = None, None
    xs = [float(st) for st, p in zip(s.steps, s.fragmentation_pct, strict=True) if p is not None]
    line = fit_line(xs, pcts)
    per_1k = line.slope * 1000 if line else None
    trend = None
    if line is not None:
        span = xs[-1] - xs[0]
        change = line.slope * span
        trend = "rising" if change > 2.0 and line.r2 > 0.3 else "falling" if change < -2.0 and line.r2 > 0.3 else "flat"
    releases = s.cache_releases if s.cache_releases is not None else count_releases(s.reserved)
    mean = sum(pcts) / len(pcts)
    waste_median = median(wastes)
    typical = waste_median if waste_median is not None else (median(pcts) or 0.0)
    verdict = "high" if typical >= HIGH_PCT else "moderate" if typical >= MODERATE_PCT else "low"
    if waste_median is not None:
        msg = f"{typical:.1f}% of reserved memory was never live within its step (median), fragmentation {trend or 'flat'}"
    else:
        msg = f"{typical:.1f}% of reserved memory holds no live tensor (median), {trend or 'flat'}"
    return FragmentationReport(
        measurable=True,
        rank=s.rank,
        percent_last=pcts[-1],
        percent_mean=mean,
        percent_max=max(pcts),
        pct_per_1k_steps=per_1k,
        trend=trend,
        bytes_at_peak_reserved=frag,
        reserved_max=r_max,
        waste_bytes=waste,
        waste_pct_median=waste_median,
        inactive_split_bytes=split,
        expandable_segments_saving=saving,
        saving_basis=basis,
        cache_releases=releases,
        verdict=verdict,
        message=msg,
    )


def analyze(series: dict[int, RankSeries]) -> FragmentationReport:
    """The rank that reserves the most (the one that would run out first)."""
    if not series:
        return _not_measurable("no step records")
    reports = [analyze_rank(s) for s in series.values()]
    measured = [r for r in reports if r.measurable]
    if not measured:
        return reports[0]
    return max(measured, key=lambda r: r.reserved_max or 0)
