"""A step-indexed history that stays bounded however long the run: the dashboard's timeline memory.

A run of a million steps must not hold a million points, and a plot a hundred cells wide cannot
show them anyway. :class:`DecimatedSeries` keeps at most ``capacity`` buckets; when full it merges
neighbours pairwise and doubles the number of steps per bucket. Each bucket keeps the *maximum* of
every field over the steps it covers, because for memory the spikes are the point: a peak that
averaging smoothed away is the OOM nobody saw coming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a >= b else b


@dataclass(frozen=True)
class SeriesPoints:
    """An immutable copy of a :class:`DecimatedSeries` for the UI thread."""

    steps: tuple[int, ...]
    columns: tuple[tuple[float | None, ...], ...]
    fields: tuple[str, ...]
    steps_per_point: int

    def column(self, name: str) -> tuple[float | None, ...]:
        return self.columns[self.fields.index(name)]

    def __len__(self) -> int:
        return len(self.steps)


class DecimatedSeries:
    """At most ``capacity`` points of ``fields`` over steps; max-pooled when it must shrink."""

    def __init__(self, fields: Sequence[str], capacity: int = 1024) -> None:
        if capacity < 4:
            raise ValueError("capacity must be at least 4")
        self.fields = tuple(fields)
        self.capacity = capacity
        self.steps_per_bucket = 1
        # Parallel lists (cheaper than a list of objects): last step of each bucket, then one list per field.
        self._steps: list[int] = []
        self._cols: list[list[float | None]] = [[] for _ in self.fields]
        self._fill = 0  # samples in the last (open) bucket
        self.samples = 0

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, step: int, values: Sequence[float | None]) -> None:
        self.samples += 1
        if self._steps and self._fill < self.steps_per_bucket:
            self._merge_into_last(step, values)
            return
        if len(self._steps) >= self.capacity:
            self._halve()
            if self._fill < self.steps_per_bucket:
                self._merge_into_last(step, values)
                return
        self._steps.append(step)
        for col, v in zip(self._cols, values, strict=True):
            col.append(v)
        self._fill = 1

    def _merge_into_last(self, step: int, values: Sequence[float | None]) -> None:
        self._steps[-1] = step
        for col, v in zip(self._cols, values, strict=True):
            col[-1] = _max(col[-1], v)
        self._fill += 1

    def _halve(self) -> None:
        """Merge buckets pairwise; the open bucket becomes part of a (possibly still open) merged one."""
        n = len(self._steps)
        pairs = range(0, n - 1, 2)
        new_steps = [self._steps[i + 1] for i in pairs]
        new_cols = [[_max(col[i], col[i + 1]) for i in pairs] for col in self._cols]
        last_fill = self._fill
        if n % 2:
            # An odd bucket out (the newest) stays alone and remains open.
            new_steps.append(self._steps[-1])
            for new, col in zip(new_cols, self._cols, strict=True):
                new.append(col[-1])
            fill = last_fill
        else:
            fill = self.steps_per_bucket + last_fill
        self._steps = new_steps
        self._cols = new_cols
        self.steps_per_bucket *= 2
        self._fill = fill

    def points(self) -> SeriesPoints:
        return SeriesPoints(
            steps=tuple(self._steps),
            columns=tuple(tuple(c) for c in self._cols),
            fields=self.fields,
            steps_per_point=self.steps_per_bucket,
        )


def downsample_max(xs: Sequence[int], ys: Sequence[float | None], n: int) -> tuple[list[int], list[float | None]]:
    """Max-pool ``(xs, ys)`` to at most ``n`` points (for a plot ``n`` cells wide)."""
    length = len(xs)
    if n <= 0 or length <= n:
        return list(xs), list(ys)
    out_x: list[int] = []
    out_y: list[float | None] = []
    for i in range(n):
        lo = i * length // n
        hi = max(lo + 1, (i + 1) * length // n)
        best: float | None = None
        for v in ys[lo:hi]:
            best = _max(best, v)
        out_x.append(xs[hi - 1])
        out_y.append(best)
    return out_x, out_y
