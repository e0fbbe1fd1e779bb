"""From probe results to a peak model, predictions and the largest value that fits.

The peak of a step is the larger of two moments (the end of the forward pass, the end of the
optimizer step), so each moment's categories are fitted on their own and the predicted peak is
the larger of the two sums, plus ``other`` (the allocator's transients) where the device measures
it. A peak that moves from one moment to the other between small and large values is then no
kink that a single curve would bend around.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from memtop.fitting.curves import Curve, fit_curve
from memtop.fitting.probes import TRACKED, ProbeResult

GIB = 1 << 30
MIB = 1 << 20
CARDS_GB = (8, 12, 16, 24, 40, 48, 80, 96, 141)
# Used where the probes cannot measure them (a CPU; or a card other than the one probed):
ASSUMED_FRAGMENTATION = 0.10  # share of the peak the caching allocator reserves on top
ASSUMED_CUDA_CONTEXT = 512 * MIB  # CUDA context, cuBLAS/cuDNN workspaces
MAX_SEARCH = 1e15


@dataclass
class PeakModel:
    """Fitted curves: per moment per category, and ``other`` where measured."""

    moments: dict[str, dict[str, Curve]]
    other: Curve | None
    measure: str  # "allocator_peak" or "tracked"
    values: list[float]
    measured: list[int]
    total_residual: float = 0.0
    total_max_residual: float = 0.0

    def peak(self, v: float) -> float:
        best = max(sum(max(0.0, c(v)) for c in cats.values()) for cats in self.moments.values())
        if self.other is not None:
            best += max(0.0, self.other(v))
        return best

    def peak_moment(self, v: float) -> str:
        return max(self.moments, key=lambda m: sum(max(0.0, c(v)) for c in self.moments[m].values()))

    def categories(self, v: float) -> dict[str, Curve]:
        """The curves of the moment that holds the peak at ``v`` (and ``other``)."""
        out = dict(self.moments[self.peak_moment(v)])
        if self.other is not None:
            out["other"] = self.other
        return out

    def scaled(self, factors: dict[str, float]) -> PeakModel:
        moments = {m: {c: cur.scaled(factors.get(c, 1.0)) for c, cur in cats.items()} for m, cats in self.moments.items()}
        other = self.other.scaled(factors.get("other", 1.0)) if self.other is not None else None
        return PeakModel(moments, other, self.measure, self.values, self.measured)


def fit_model(probes: Sequence[ProbeResult]) -> PeakModel:
    """Fit the usable probes (at least two distinct values; the caller checks)."""
    usable = [p for p in probes if p.usable]
    xs = [p.spec.value for p in usable]
    moments: dict[str, dict[str, Curve]] = {}
    names = sorted({m for p in usable for m in p.moments})
    for m in names:
        having = [p for p in usable if m in p.moments]
        if len({p.spec.value for p in having}) < 2:
            continue
        moments[m] = {c: fit_curve([p.spec.value for p in having], [p.moments[m][c] for p in having]) for c in TRACKED}
    if not moments:  # records without moments (older hooks): the categories at the peak
        moments["peak"] = {c: fit_curve(xs, [p.categories.get(c) or 0 for p in usable]) for c in TRACKED}
    measure = "allocator_peak" if all(p.measure == "allocator_peak" for p in usable) else "tracked"
    other: Curve | None = None
    if measure == "allocator_peak":
        # other = the measured peak minus the larger moment sum, so model + other = the peak exactly at the probes
        partial = PeakModel(moments, None, measure, xs, [])
        other = fit_curve(xs, [float(p.peak_bytes or 0) - partial.peak(p.spec.value) for p in usable])
    model = PeakModel(moments, other, measure, xs, [int(p.peak_bytes or 0) for p in usable])
    res = [y - model.peak(x) for x, y in zip(xs, model.measured, strict=True)]
    model.total_residual = (sum(r * r for r in res) / len(res)) ** 0.5 if res else 0.0
    model.total_max_residual = max((abs(r) for r in res), default=0.0)
    return model


@dataclass
class Margin:
    """What is held back from a card's memory besides the predicted peak."""

    fragmentation: float  # share of the peak
    fixed_bytes: int  # CUDA context and workspaces (or, on a CPU, the process's own baseline)
    measured: bool
    text: str

    def need(self, peak: float) -> float:
        return peak * (1 + self.fragmentation) + self.fixed_bytes


def margin_from_probes(probes: Sequence[ProbeResult], for_this_device: bool) -> Margin:
    """Measured where the probes ran on CUDA; stated assumptions otherwise."""
    usable = [p for p in probes if p.usable]
    cuda = [p for p in usable if p.measure == "allocator_peak" and p.reserved is not None]
    if cuda:
        frag = max(((p.reserved or 0) - (p.peak_bytes or 0)) / max(1, p.peak_bytes or 1) for p in cuda)
        frag = max(0.05, frag)
        ctx = max(max(0, (p.device_used or 0) - (p.reserved or 0)) for p in cuda)
        ctx = ctx or ASSUMED_CUDA_CONTEXT
        return Margin(frag, ctx, True, f"reserved beyond the peak {frag:.0%} (measured, at least 5%) + CUDA context {ctx / MIB:.0f} MiB (measured)")
    if for_this_device and usable:
        # A CPU: the process's resident memory beyond the tracked tensors (interpreter, libraries,
        # untracked buffers), measured at the smallest probe.
        small = min(usable, key=lambda p: p.spec.value)
        base = max(0, (small.device_used or 0) - (small.peak_bytes or 0))
        return Margin(ASSUMED_FRAGMENTATION, base, True,
                      f"{ASSUMED_FRAGMENTATION:.0%} of the peak (assumed) + the process's own {base / MIB:.0f} MiB (resident set beyond the tracked tensors, measured)")
    return Margin(ASSUMED_FRAGMENTATION, ASSUMED_CUDA_CONTEXT, False,
                  f"{ASSUMED_FRAGMENTATION:.0%} of the peak for fragmentation + {ASSUMED_CUDA_CONTEXT / MIB:.0f} MiB CUDA context (assumed)")


@dataclass
class Fit:
    value: float | None  # the largest value that fits; None when even the smallest does not
    unbounded: bool = False  # memory does not grow with the value


def largest_fitting(fn: Callable[[float], float], capacity: float, integer: bool, lo: float = 1.0) -> Fit:
    """The largest ``v >= lo`` with ``fn(v) <= capacity`` (``fn`` taken as non-decreasing)."""
    if fn(lo) > capacity:
        return Fit(None)
    hi = lo
    while fn(hi * 2) <= capacity:
        hi *= 2
        if hi > MAX_SEARCH:
            return Fit(None, unbounded=True)
    a, b = hi, hi * 2  # fn(a) fits, fn(b) does not
    if integer:
        ia, ib = math.floor(a), math.ceil(b)
        while ib - ia > 1:
            imid = (ia + ib) // 2
            if fn(imid) <= capacity:
                ia = imid
            else:
                ib = imid
        return Fit(float(ia))
    for _ in range(60):
        mid = (a + b) / 2
        if fn(mid) <= capacity:
            a = mid
        else:
            b = mid
    return Fit(float(f"{a:.3g}"))


@dataclass
class CardRow:
    gb: int
    bytes: int
    as_is: Fit
    savings: dict[str, Fit] = field(default_factory=dict)


def card_table(model: PeakModel, saved: dict[str, PeakModel], margin: Margin, integer: bool, lo: float) -> list[CardRow]:
    rows = []
    for gb in CARDS_GB:
        cap = gb * GIB
        row = CardRow(gb, cap, largest_fitting(lambda v: margin.need(model.peak(v)), cap, integer, lo))
        for key, m in saved.items():
            row.savings[key] = largest_fitting(lambda v, m=m: margin.need(m.peak(v)), cap, integer, lo)  # type: ignore[misc]
        rows.append(row)
    return rows


def _adjusted(cur: Curve, base: int | None, seen: int | None) -> Curve:
    """``cur`` scaled by seen/base; where the base had none, the measured bytes are added as a constant."""
    if not isinstance(base, int) or not isinstance(seen, int):
        return cur
    if base > 0:
        return cur.scaled(seen / base)
    coef = list(cur.coef)
    coef[0] += seen
    return Curve(cur.kind, tuple(coef), cur.residual, cur.max_residual, cur.points)


def measured_saving(model: PeakModel, base: ProbeResult, probe: ProbeResult) -> PeakModel:
    """The model with the saving on: each moment's categories scaled by the ratio measured by one
    probe with the saving against the base probe at the same value."""
    moments: dict[str, dict[str, Curve]] = {}
    for m, cats in model.moments.items():
        b, s = base.moments.get(m, {}), probe.moments.get(m, {})
        moments[m] = {c: _adjusted(cur, b.get(c), s.get(c)) for c, cur in cats.items()}
    other = model.other
    if other is not None:
        other = _adjusted(other, base.categories.get("other"), probe.categories.get("other"))
    return PeakModel(moments, other, model.measure, model.values, model.measured)
