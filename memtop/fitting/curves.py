"""Fit memory as a function of one flag's value: constant, linear or quadratic, by least squares.

Memory grows with a scaling flag as ``a + b·v`` (batch size, frames, points) or ``a + b·v + c·v²``
(pixels over resolution, attention over sequence length). The simplest form that the measurements
allow is kept, because a needless quadratic term through three points turns a little noise into a
large error four times further out.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# A form is good enough when its worst residual is within this share of the largest measurement
# (tensor sizes are exact, so a true line misses by nothing); the quadratic term also needs the
# line to miss by more than ABS_TOLERANCE bytes (allocator rounding, a few scalars).
REL_TOLERANCE = 0.001
ABS_TOLERANCE = 4096


@dataclass(frozen=True)
class Curve:
    """``coef[0] + coef[1]·v + coef[2]·v²`` (missing terms are zero)."""

    kind: str  # "constant", "linear" or "quadratic"
    coef: tuple[float, ...]
    residual: float  # root mean square of (measured − fitted) over the points, in the data's unit
    max_residual: float  # the worst |measured − fitted|
    points: int

    def __call__(self, v: float) -> float:
        return sum(c * v**i for i, c in enumerate(self.coef))

    def scaled(self, factor: float) -> Curve:
        return Curve(self.kind, tuple(c * factor for c in self.coef), self.residual * factor, self.max_residual * factor, self.points)

    def formula(self, var: str = "v") -> str:
        names = ["", f"·{var}", f"·{var}²"]
        terms = [f"{c:+.4g}{names[i]}" for i, c in enumerate(self.coef) if c != 0 or i == 0]
        return " ".join(terms).lstrip("+")


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None for a singular system."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12 * max(1.0, max(abs(x) for row in m for x in row[:n])):
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                for k in range(col, n + 1):
                    m[r][k] -= f * m[col][k]
    return [m[i][n] / m[i][i] for i in range(n)]


def polyfit(xs: Sequence[float], ys: Sequence[float], degree: int) -> tuple[float, ...] | None:
    """Least-squares polynomial coefficients (lowest power first); None without enough spread."""
    if len({float(x) for x in xs}) <= degree:
        return None
    if degree == 1:
        slope, intercept = statistics.linear_regression([float(x) for x in xs], [float(y) for y in ys])
        return intercept, slope
    # Scale x to about 1 so the normal equations stay well conditioned for values like 1e6 points.
    s = max(abs(float(x)) for x in xs) or 1.0
    us = [float(x) / s for x in xs]
    k = degree + 1
    ata = [[sum(u ** (i + j) for u in us) for j in range(k)] for i in range(k)]
    aty = [sum(float(y) * u**i for u, y in zip(us, ys, strict=True)) for i in range(k)]
    sol = _solve(ata, aty)
    if sol is None:
        return None
    return tuple(c / s**i for i, c in enumerate(sol))


def _curve(kind: str, coef: tuple[float, ...], xs: Sequence[float], ys: Sequence[float]) -> Curve:
    c = Curve(kind, coef, 0.0, 0.0, len(xs))
    res = [float(y) - c(float(x)) for x, y in zip(xs, ys, strict=True)]
    rms = (sum(r * r for r in res) / len(res)) ** 0.5 if res else 0.0
    return Curve(kind, coef, rms, max((abs(r) for r in res), default=0.0), len(xs))


def fit_curve(xs: Sequence[float], ys: Sequence[float]) -> Curve:
    """The simplest of constant, linear, quadratic that fits the points within tolerance.

    A quadratic is used only when the line misses by more than the tolerance and the quadratic
    term is positive (memory that grows ever slower is not a shape a scaling flag gives; a line is
    the safer extrapolation then). With three points a quadratic passes through all of them, so
    the line's miss is what justifies it.
    """
    if not xs:
        raise ValueError("no points to fit")
    top = max(abs(float(y)) for y in ys)
    tol = max(ABS_TOLERANCE, REL_TOLERANCE * top)
    mean = sum(float(y) for y in ys) / len(ys)
    constant = _curve("constant", (mean,), xs, ys)
    # No absolute floor here: a category that is small at the probes (a few KiB of activations at
    # batch 1 and 2) may be what dominates at 64.
    if constant.max_residual <= REL_TOLERANCE * top or len({float(x) for x in xs}) < 2:
        return constant
    line_coef = polyfit(xs, ys, 1)
    if line_coef is None:
        return constant
    line = _curve("linear", line_coef, xs, ys)
    if line.max_residual <= tol or len({float(x) for x in xs}) < 3:
        return line
    quad_coef = polyfit(xs, ys, 2)
    if quad_coef is None or quad_coef[2] <= 0:
        return line
    quad = _curve("quadratic", quad_coef, xs, ys)
    return quad if quad.max_residual < line.max_residual else line
