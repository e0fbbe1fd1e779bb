"""The step's peak after a change, recomputed moment by moment.

A step has two moments the hook measures: the end of the forward pass (saved activations alive,
usually no gradients) and the end of the optimizer step (gradients and optimizer state alive, no
activations). The step's peak is the larger of the two. A change acts on categories at a moment
(halving the micro-batch halves the activations at the end of forward, but with accumulation the
gradients of the first micro-batch are alive there too), so the saving is

    peak before − max over moments of (the changed categories at that moment)

and never the saving in one category: when the other moment is the larger one, shrinking the
activations moves the peak there and saves less than it seems.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from memtop.analyzers.facts import Facts
from memtop.units import fmt_bytes

Moment = dict[str, int]
Change = Callable[[str, Moment], Mapping[str, float]]

FORWARD_POINTS = ("forward_end", "oom")  # moments where the saved activations are alive
POINT_NAMES = {"forward_end": "the end of the forward pass", "optimizer_step": "the end of the optimizer step", "manual_step": "the end of the step", "oom": "the failed allocation"}


def is_forward(point: str) -> bool:
    return point in FORWARD_POINTS


def level(m: Mapping[str, float]) -> float:
    return sum(max(0.0, float(v)) for v in m.values())


def scaled(m: Moment, **factors: float) -> dict[str, float]:
    """The moment with some categories multiplied (``activations=0.5``)."""
    return {c: v * factors.get(c, 1.0) for c, v in m.items()}


def before(f: Facts) -> int:
    """The peak as the moments add up (the measured level of the peak step)."""
    if not f.moments:
        return f.level
    return max(f.level, int(max(level(m) for m in f.moments.values())))


def after(f: Facts, change: Change) -> tuple[int, str]:
    """(the step's peak after ``change``, the moment that holds it)."""
    if not f.moments:
        return f.level, f.peak_point
    levels = {p: level(change(p, dict(m))) for p, m in f.moments.items()}
    point = max(levels, key=levels.__getitem__)
    return int(levels[point]), point


def saving(f: Facts, change: Change) -> tuple[int, str]:
    """(bytes the step's peak falls by, a note on where the peak is after the change)."""
    new, point = after(f, change)
    old = before(f)
    note = ""
    if point != f.peak_point and len(f.moments) > 1:
        note = f"the peak moves to {POINT_NAMES.get(point, point)} ({_mib(new)})"
    elif len(f.moments) > 1 and not is_forward(point):
        note = f"the peak stays at {POINT_NAMES.get(point, point)}"
    return old - new, note


def _mib(n: float) -> str:
    return fmt_bytes(int(n))


def joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
