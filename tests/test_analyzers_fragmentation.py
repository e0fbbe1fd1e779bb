"""Fragmentation diagnosis on synthetic CUDA-shaped runs, and its absence on CPU."""

from __future__ import annotations

from pathlib import Path

from runfactory import GiB, MiB, make_run

from memtop.analyzers import fragmentation
from memtop.analyzers.series import rank_series
from memtop.runs.reader import load_run


def _frag(run: Path) -> fragmentation.FragmentationReport:
    return fragmentation.analyze(rank_series(load_run(run)))


def test_cpu_is_not_measurable(tmp_path: Path) -> None:
    rep = _frag(make_run(tmp_path, device="cpu"))
    assert not rep.measurable and rep.verdict == "not_measurable"
    assert "CPU" in rep.message
    assert rep.expandable_segments_saving is None


def test_rising_fragmentation_and_expandable_estimate(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=100, per_step=lambda s, r: {"fragmentation": 200 * MiB + s * 40 * MiB})
    rep = _frag(run)
    assert rep.measurable and rep.trend == "rising"
    assert rep.pct_per_1k_steps is not None and rep.pct_per_1k_steps > 0
    # the estimate is what was reserved beyond the live peak at the step with the most reserved (the last)
    assert rep.saving_basis == "reserved_minus_peak"
    assert rep.expandable_segments_saving == rep.waste_bytes == 200 * MiB + 100 * 40 * MiB
    assert rep.inactive_split_bytes == (200 * MiB + 100 * 40 * MiB) // 2
    assert rep.reserved_max is not None and rep.bytes_at_peak_reserved is not None


def test_low_flat_fragmentation(tmp_path: Path) -> None:
    rep = _frag(make_run(tmp_path, steps=50, per_step=lambda s, r: {"fragmentation": 0, "other": 0}))
    assert rep.measurable and rep.verdict == "low" and rep.trend == "flat"


def test_cache_releases_are_counted(tmp_path: Path) -> None:
    # reserved drops to near allocated every 5th step (empty_cache)
    run = make_run(tmp_path, steps=50, per_step=lambda s, r: {"fragmentation": 0 if s % 5 == 0 else 6 * GiB})
    rep = _frag(run)
    assert rep.cache_releases == 10
