"""Least-squares line fits over step series (``statistics``; long series are thinned first)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

MAX_FIT_POINTS = 4000


@dataclass(frozen=True)
class LineFit:
    slope: float  # units per step
    intercept: float
    r2: float  # 0..1; 1.0 for a perfectly straight line, 0.0 for a flat or patternless one
    n: int


def thin(xs: list[float], ys: list[float], limit: int = MAX_FIT_POINTS) -> tuple[list[float], list[float]]:
    """At most ``limit`` evenly spaced points (first and last kept)."""
    n = len(xs)
    if n <= limit:
        return xs, ys
    stride = (n - 1) / (limit - 1)
    idx = [round(k * stride) for k in range(limit)]
    return [xs[i] for i in idx], [ys[i] for i in idx]


def fit_line(xs: list[float], ys: list[float]) -> LineFit | None:
    """Ordinary least squares of ``ys`` on ``xs``; None with fewer than 3 points or no x spread."""
    xs, ys = thin(xs, ys)
    n = len(xs)
    if n < 3:
        return None
    try:
        slope, intercept = statistics.linear_regression(xs, ys)
    except statistics.StatisticsError:  # every x the same
        return None
    try:
        r = statistics.correlation(xs, ys)
    except statistics.StatisticsError:  # a flat series: nothing to explain
        r = 0.0
    return LineFit(slope=slope, intercept=intercept, r2=max(0.0, min(1.0, r * r)), n=n)
