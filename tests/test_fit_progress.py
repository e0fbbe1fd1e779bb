"""Progress of `memtop fit`: a rewritten line on a terminal (probe, step, time left), one plain
line per probe otherwise."""

from __future__ import annotations

import io

import pytest

from memtop.commands.fit import Progress


def test_plain_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    p = Progress(total=3, steps=3, live=False)
    p.update(1, "batch-size=2", 1, 1.0)  # nothing between probes when not a terminal
    p.done(1, "batch-size=2: peak 1 MiB", 10.0)
    p.done(2, "batch-size=4: peak 2 MiB", 20.0)
    lines = err.getvalue().splitlines()
    assert lines == ["[memtop fit] probe 1/3 batch-size=2: peak 1 MiB (10.0 s; ≈20 s left)", "[memtop fit] probe 2/3 batch-size=4: peak 2 MiB (20.0 s; ≈15 s left)"]


def test_live_line_shows_probe_step_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    p = Progress(total=3, steps=5, live=True)
    p.update(1, "batch-size=2", 2, 3.0)
    assert err.getvalue().endswith("[memtop fit] probe 1/3 batch-size=2: step 2/5, 3 s, time left: measuring the first probe")
    p.done(1, "batch-size=2: peak 1 MiB", 10.0)
    p._last = 0.0
    p.update(2, "batch-size=4", 3, 4.0)
    assert err.getvalue().endswith("probe 2/3 batch-size=4: step 3/5, 4 s, ≈16 s left")  # 6 s of this one + 10 s for the last
    assert "\r\x1b[2K" in err.getvalue()
