"""The dashboard's timeline memory: bounded however long the run, spikes kept."""

from __future__ import annotations

import random

from memtop.tui.history import DecimatedSeries, downsample_max


def test_short_series_is_kept_exactly() -> None:
    s = DecimatedSeries(("a", "b"), capacity=16)
    for step in range(1, 11):
        s.add(step, (step * 10, None))
    pts = s.points()
    assert pts.steps == tuple(range(1, 11))
    assert pts.column("a") == tuple(float(x * 10) for x in range(1, 11))
    assert pts.column("b") == (None,) * 10
    assert pts.steps_per_point == 1


def test_a_million_steps_stay_within_capacity_and_keep_the_spike() -> None:
    s = DecimatedSeries(("peak",), capacity=256)
    spike_at = 654_321
    for step in range(1, 1_000_001):
        s.add(step, (1_000_000 if step == spike_at else step % 7,))
    pts = s.points()
    assert len(pts) <= 256
    assert s.samples == 1_000_000
    assert max(v for v in pts.column("peak") if v is not None) == 1_000_000
    # The last point is the last step, and buckets are in step order.
    assert pts.steps[-1] == 1_000_000
    assert list(pts.steps) == sorted(pts.steps)
    assert pts.steps_per_point >= 1_000_000 // 256


def test_bucket_max_matches_brute_force() -> None:
    rng = random.Random(7)
    values = [rng.randint(0, 10_000) for _ in range(5_000)]
    s = DecimatedSeries(("v",), capacity=64)
    for i, v in enumerate(values, 1):
        s.add(i, (v,))
    pts = s.points()
    lo = 0
    for step, got in zip(pts.steps, pts.column("v"), strict=True):
        assert got == max(values[lo:step])
        lo = step
    assert lo == len(values)


def test_downsample_max_keeps_maxima_and_size() -> None:
    xs = list(range(1000))
    ys: list[float | None] = [float(x % 10) for x in xs]
    ys[500] = 99.0
    ys[3] = None
    ox, oy = downsample_max(xs, ys, 100)
    assert len(ox) == len(oy) == 100
    assert max(v for v in oy if v is not None) == 99.0
    assert ox[-1] == 999
    assert downsample_max([1, 2], [1.0, 2.0], 10) == ([1, 2], [1.0, 2.0])
