"""Least-squares line fits over step series (pure Python; long series are thinned first)."""

from __future__ import annotations

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
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    slope = sxy / sxx
    r2 = 0.0 if syy == 0 else max(0.0, min(1.0, (sxy * sxy) / (sxx * syy)))
    return LineFit(slope=slope, intercept=my - slope * mx, r2=r2, n=n)
