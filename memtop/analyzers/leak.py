"""Leak verdict: does memory keep growing after warm-up, in which category, in which tensors?

Each series (allocated or, on CPU, tracked; every category; the device-level figure) is fitted
with a line over the steps after warm-up. A series *grows* when the fitted growth over the window
is large against the run's peak, the line explains most of the variation (R²), and the last
quarter of the window really sits above the first (so one late spike is not a leak). A flat run,
however noisy, gives no alarm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memtop.analyzers.fit import fit_line
from memtop.analyzers.series import RankSeries, median
from memtop.runs.format import CATEGORIES

MiB = 1 << 20
MIN_WINDOW = 5
R2_MIN = 0.6
R2_DEVICE_LEAK = 0.9  # the device-level figure alone is a leak only when it grows this steadily
MODEL_STATE = {"parameters", "gradients", "optimizer_state"}


@dataclass(frozen=True)
class Trend:
    name: str
    bytes_per_step: float
    growth_bytes: int  # fitted growth over the window
    r2: float
    start_bytes: int
    end_bytes: int
    growing: bool


@dataclass(frozen=True)
class GrowingTensor:
    name: str
    category: str
    first_bytes: int  # 0 when the tensor was not listed at the window's start
    last_bytes: int

    @property
    def growth_bytes(self) -> int:
        return self.last_bytes - self.first_bytes


@dataclass(frozen=True)
class LeakReport:
    verdict: str  # "leak", "suspected", "model_growth", "none", "insufficient_data" (see docs/analyze.md)
    rank: int | None
    measure: str  # the headline series: "allocated" (CUDA) or "tracked" (CPU)
    warmup_steps: int
    window_first_step: int | None
    window_last_step: int | None
    bytes_per_step: float | None  # of the fastest-growing headline series (measure, or device_used)
    growth_bytes: int | None
    growing_series: list[str] = field(default_factory=list)
    growing_categories: list[str] = field(default_factory=list)
    tensors: list[GrowingTensor] = field(default_factory=list)
    trends: list[Trend] = field(default_factory=list)
    steps_until_full: int | None = None
    message: str = ""


def warmup_steps(n: int) -> int:
    """Steps skipped before fitting: a fifth of the run, at least 2, at most 50."""
    return max(2, min(n // 5, 50))


def _trend(name: str, steps: list[int], values: list[int | None], threshold: int) -> Trend | None:
    xs: list[float] = []
    ys: list[float] = []
    for s, v in zip(steps, values, strict=True):
        if v is not None:
            xs.append(float(s))
            ys.append(float(v))
    if len(xs) < MIN_WINDOW:
        return None
    line = fit_line(xs, ys)
    if line is None:
        return None
    span = xs[-1] - xs[0]
    growth = line.slope * span
    q = max(1, len(ys) // 4)
    first_q = median(ys[:q]) or 0.0
    last_q = median(ys[-q:]) or 0.0
    growing = growth >= threshold and line.r2 >= R2_MIN and (last_q - first_q) >= 0.5 * growth
    return Trend(
        name=name,
        bytes_per_step=line.slope,
        growth_bytes=int(growth),
        r2=line.r2,
        start_bytes=int(ys[0]),
        end_bytes=int(ys[-1]),
        growing=growing,
    )


def _growing_tensors(s: RankSeries, lo: int, categories: set[str]) -> list[GrowingTensor]:
    def sums(i: int) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for t in s.records[i].large_tensors:
            key = (t.name, t.category)
            out[key] = out.get(key, 0) + t.bytes
        return out

    first = sums(lo)
    last = sums(len(s.steps) - 1)
    grown = []
    for (name, cat), b in last.items():
        if categories and cat not in categories:
            continue
        a = first.get((name, cat), 0)
        if b - a >= MiB and b > 1.1 * a:
            grown.append(GrowingTensor(name=name, category=cat, first_bytes=a, last_bytes=b))
    grown.sort(key=lambda g: g.growth_bytes, reverse=True)
    return grown[:10]


def analyze_rank(s: RankSeries) -> LeakReport:
    n = len(s.steps)
    warm = warmup_steps(n)
    measure = "allocated" if s.has_allocator else "tracked"
    if n - warm < MIN_WINDOW:
        return LeakReport(
            verdict="insufficient_data",
            rank=s.rank,
            measure=measure,
            warmup_steps=warm,
            window_first_step=None,
            window_last_step=None,
            bytes_per_step=None,
            growth_bytes=None,
            message=f"{n} step(s) recorded; a leak verdict needs at least {warm + MIN_WINDOW} (warm-up {warm} + {MIN_WINDOW})",
        )
    steps = s.steps[warm:]
    ref = max(s.levels()) or 1
    cat_threshold = max(MiB, int(0.01 * ref))
    head_values = s.allocated if s.has_allocator else s.tracked
    trends: list[Trend] = []
    head = _trend(measure, steps, list(head_values[warm:]), cat_threshold)
    if head:
        trends.append(head)
    for c in CATEGORIES:
        t = _trend(c, steps, s.categories[c][warm:], cat_threshold)
        if t:
            trends.append(t)
    used_ref = max((v for v in s.device_used if v is not None), default=ref)
    dev = _trend("device_used", steps, s.device_used[warm:], max(16 * MiB, int(0.03 * used_ref)))
    if dev:
        trends.append(dev)
    reserved = _trend("reserved", steps, s.reserved[warm:], cat_threshold) if s.has_allocator else None
    if reserved:
        trends.append(reserved)
    # The caching allocator's reserved memory (and so the device's used memory) grows with
    # fragmentation while nothing live grows: that is not a leak (see the fragmentation report).
    cache_growth = reserved is not None and reserved.growing and dev is not None and reserved.bytes_per_step >= 0.8 * dev.bytes_per_step
    growing = [t for t in trends if t.growing and t.name != "reserved" and not (cache_growth and t.name == "device_used")]
    growing_cats = [t.name for t in growing if t.name in CATEGORIES]
    head_growing = [t for t in growing if t.name in (measure, *CATEGORIES)]
    if head_growing:
        model_only = bool(growing_cats) and set(growing_cats) <= MODEL_STATE and "parameters" in growing_cats
        verdict = "model_growth" if model_only else "leak"
    elif dev is not None and dev in growing:
        # CPU: the process RSS is the only figure that sees tensors outside the four categories
        verdict = "leak" if (not s.has_allocator and dev.r2 >= R2_DEVICE_LEAK) else "suspected"
    else:
        verdict = "none"
    main = max(growing, key=lambda t: t.bytes_per_step) if growing else head
    tensors = _growing_tensors(s, warm, set(growing_cats)) if verdict in ("leak", "model_growth") else []
    until_full = _steps_until_full(s, growing) if growing else None
    return LeakReport(
        verdict=verdict,
        rank=s.rank,
        measure=measure,
        warmup_steps=warm,
        window_first_step=steps[0],
        window_last_step=steps[-1],
        bytes_per_step=main.bytes_per_step if main else None,
        growth_bytes=main.growth_bytes if main else None,
        growing_series=[t.name for t in growing],
        growing_categories=growing_cats,
        tensors=tensors,
        trends=trends,
        steps_until_full=until_full,
        message=_message(verdict, growing, measure, s.has_allocator)
        + ("; reserved memory grows with fragmentation (not a leak: see fragmentation)" if cache_growth else ""),
    )


def _steps_until_full(s: RankSeries, growing: list[Trend]) -> int | None:
    total = s.total()
    if not total or not growing:
        return None
    rate = max(t.bytes_per_step for t in growing)
    if rate <= 0:
        return None
    i = len(s.steps) - 1
    used_now = max(v for v in (s.device_used[i], s.reserved[i], s.level(i)) if v is not None)
    return max(0, int((total - used_now) / rate))


def _message(verdict: str, growing: list[Trend], measure: str, has_allocator: bool) -> str:
    if verdict == "none":
        return f"no leak: {measure} and every category are flat after warm-up"
    names = ", ".join(f"{t.name} (+{t.bytes_per_step / MiB:.2f} MiB/step)" for t in growing)
    if verdict == "model_growth":
        return f"the model itself grows (e.g. densification, unfrozen layers), not a leak: {names}"
    if all(t.name == "device_used" for t in growing):
        where = "process memory (RSS)" if not has_allocator else "the device memory NVML reports"
        return (
            f"{where} grows ({names}) while the tracked categories are flat: tensors or objects kept "
            "across steps that memtop does not attribute (e.g. outputs or losses kept in a list)"
        )
    return f"growing after warm-up: {names}"


def analyze(series: dict[int, RankSeries]) -> LeakReport:
    """The verdict of the worst rank (a leak on any rank is a leak)."""
    if not series:
        return LeakReport(
            verdict="insufficient_data",
            rank=None,
            measure="tracked",
            warmup_steps=0,
            window_first_step=None,
            window_last_step=None,
            bytes_per_step=None,
            growth_bytes=None,
            message="no step records",
        )
    order = {"leak": 0, "suspected": 1, "model_growth": 2, "none": 3, "insufficient_data": 4}
    reports = [analyze_rank(s) for s in series.values()]
    return min(reports, key=lambda r: (order[r.verdict], -(r.bytes_per_step or 0.0)))
