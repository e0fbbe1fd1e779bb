"""The analyzers' statistics (``statistics`` underneath) against figures computed here by hand."""

from __future__ import annotations

import random

import pytest

from memtop.analyzers.fit import fit_line
from memtop.analyzers.series import median, quantile
from memtop.fitting.curves import polyfit


def test_median_and_p90_against_the_definitions() -> None:
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 101):
        vals = [rng.uniform(0, 1e9) for _ in range(n)]
        s = sorted(vals)
        mid = n // 2
        assert median(vals) == pytest.approx(s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2)
        # p90 interpolated between the order statistics: position 0.9 * (n - 1)
        pos = 0.9 * (n - 1)
        lo = int(pos)
        expected = s[lo] + (s[min(lo + 1, n - 1)] - s[lo]) * (pos - lo)
        assert quantile(vals, 0.9) == pytest.approx(expected)
    assert median([]) is None and quantile([], 0.9) is None


def test_line_fit_recovers_slope_intercept_and_r2() -> None:
    rng = random.Random(5)
    xs = [float(i) for i in range(500)]
    ys = [3e6 + 2.5e5 * x + rng.gauss(0, 1e5) for x in xs]
    fit = fit_line(xs, ys)
    assert fit is not None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    assert fit.slope == pytest.approx(sxy / sxx) and fit.intercept == pytest.approx(my - sxy / sxx * mx)
    assert fit.r2 == pytest.approx(sxy * sxy / (sxx * syy))
    flat = fit_line([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert flat is not None and flat.slope == 0 and flat.r2 == 0.0  # a flat series explains nothing
    assert fit_line([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # no x spread
    assert fit_line([1.0, 2.0], [1.0, 2.0]) is None  # too few points


def test_polyfit_line_and_quadratic() -> None:
    xs = [1.0, 2.0, 4.0, 8.0]
    line = polyfit(xs, [7 + 48 * x for x in xs], 1)
    assert line is not None and line == pytest.approx((7.0, 48.0))
    quad = polyfit(xs, [1 + 2 * x + 3 * x * x for x in xs], 2)
    assert quad is not None and quad == pytest.approx((1.0, 2.0, 3.0))
    assert polyfit([2.0, 2.0], [1.0, 3.0], 1) is None
