"""The arithmetic of `memtop fit`: curve forms and residuals, the largest value that fits, sizes,
the scaling flag picked from detected flags, and the savings a script can express."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from memtop.analyzers.flags import FlagEntry
from memtop.fitting.capacity import GIB, Margin, largest_fitting
from memtop.fitting.curves import fit_curve, polyfit
from memtop.fitting.scaling import default_values, find_flag, pick_scaling_flag, savings_for, scaling_role
from memtop.fitting.sizes import parse_size
from memtop.profiler.device_cap import fraction_for

REPO = Path(__file__).resolve().parent.parent


def test_constant_linear_quadratic_forms_are_told_apart() -> None:
    xs = [1, 2, 4]
    assert fit_curve(xs, [5_000_000] * 3).kind == "constant"
    line = fit_curve(xs, [1_000_000 + 300_000 * x for x in xs])
    assert line.kind == "linear"
    assert line(16) == pytest.approx(1_000_000 + 300_000 * 16)
    quad = fit_curve([8, 16, 32], [2_000_000 + 10 * x + 3000 * x * x for x in (8, 16, 32)])
    assert quad.kind == "quadratic"
    assert quad(128) == pytest.approx(2_000_000 + 1280 + 3000 * 128 * 128, rel=1e-9)
    assert quad.residual == pytest.approx(0, abs=1e-3)


def test_noise_within_tolerance_keeps_the_line_and_reports_the_residual() -> None:
    ys = [10_000_000 + 1_000_000 * x for x in (1, 2, 3, 4)]
    ys[1] += 7_000  # 0.05% of the largest: noise, not curvature
    c = fit_curve([1, 2, 3, 4], ys)
    assert c.kind == "linear"
    assert 0 < c.max_residual < 7_000
    rms = math.sqrt(sum((y - c(x)) ** 2 for x, y in zip([1, 2, 3, 4], ys, strict=True)) / 4)
    assert c.residual == pytest.approx(rms)


def test_a_small_quadratic_share_at_the_probes_is_still_found() -> None:
    """Naive attention: the seq² scores are a few percent of the activations at small lengths and
    dominate at 4x; the line misses by more than 0.1%, so the quadratic is kept."""
    xs = [16, 32, 64]
    ys = [100_000 * x + 40 * x * x for x in xs]
    c = fit_curve(xs, ys)
    assert c.kind == "quadratic"
    assert c(256) == pytest.approx(100_000 * 256 + 40 * 256 * 256)


def test_concave_data_is_not_fitted_with_a_falling_quadratic() -> None:
    xs = [1, 2, 4, 8]
    c = fit_curve(xs, [math.sqrt(x) * 1e7 for x in xs])
    assert c.kind == "linear"  # never a form that turns down beyond the probes


def test_polyfit_handles_large_values() -> None:
    xs = [1e6, 2e6, 4e6]
    coef = polyfit(xs, [7 + 48 * x for x in xs], 1)
    assert coef is not None and coef[1] == pytest.approx(48) and coef[0] == pytest.approx(7, abs=1e-3)


def test_largest_fitting_integer_and_unbounded() -> None:
    m = Margin(0.1, 512 << 20, False, "")

    def fn(v: float) -> float:
        return m.need(100e6 * v + 1e9)

    fit = largest_fitting(fn, 24 * GIB, integer=True)
    v = fit.value
    assert v is not None and fn(v) <= 24 * GIB < fn(v + 1)
    assert largest_fitting(fn, 1 * GIB, integer=True).value is None
    assert largest_fitting(lambda v: 1e9, 24 * GIB, integer=True).unbounded


def test_parse_size() -> None:
    assert parse_size("24GB") == 24 * GIB == parse_size("24GiB") == parse_size("24g")
    assert parse_size("1536MiB") == 1536 << 20
    for bad in ("", "x", "0", "-3GB", "nan"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_device_cap_fraction() -> None:
    assert fraction_for(8 * GIB, 80 * GIB) == pytest.approx(0.1)
    assert fraction_for(100 * GIB, 80 * GIB) == 1.0


def _entry(flag: str, kind: str, value: str | None = None, help_text: str = "") -> FlagEntry:
    return FlagEntry(flag=flag, dest=flag.lstrip("-").replace("-", "_"), kind=kind, value=value, default=value, help=help_text)


def test_scaling_roles_and_pick_order() -> None:
    assert scaling_role(_entry("--batch-size", "int")) == "batch_size"
    assert scaling_role(_entry("--seq-len", "int")) == "sequence_length"
    assert scaling_role(_entry("--num-gaussians", "int")) == "points"
    assert scaling_role(_entry("--max-frames", "int")) == "frames"
    assert scaling_role(_entry("--resolution", "int")) == "resolution"
    assert scaling_role(_entry("--lr", "float")) is None
    entries = [_entry("--resolution", "int", "64"), _entry("--max-frames", "int", "8"), _entry("--lr", "float")]
    picked = pick_scaling_flag(entries)
    assert picked is not None and picked[1] == "frames"
    assert pick_scaling_flag([_entry("--lr", "float")]) is None
    assert find_flag(entries, "max-frames") is entries[1] and find_flag(entries, "max_frames") is entries[1]
    assert find_flag(entries, "nope") is None
    assert default_values(8, True) == [2, 4, 8]
    assert default_values(1, True) == [1, 2, 4]


def test_savings_from_the_transformers_real_flags() -> None:
    """Flags detected from the sample script itself: AMP, checkpointing and LoRA are flags (measured),
    accumulation is arithmetic when the batch size is what is varied; fp16 storage is estimated."""
    from memtop.analyzers.flags import detect_flags

    cmd = [sys.executable, str(REPO / "sample_runs" / "transformer_finetune.py"), "--device", "cpu"]
    entries = detect_flags(cmd, REPO)
    assert entries, "flag detection found nothing"
    savings, _ = savings_for(entries, cmd, "batch_size", REPO)
    how = {s.key: s.how for s in savings}
    assert how == {"amp": "measured", "checkpointing": "measured", "accumulation": "arithmetic", "lora": "measured", "fp16_storage": "estimated"}
    by = {s.key: s for s in savings}
    assert by["amp"].args_change is not None and "--amp" in by["amp"].args_change
    assert by["lora"].args_change is not None and by["lora"].args_change[-2:] == ["--lora-r", "8"]
    seq, _ = savings_for(entries, cmd, "sequence_length", REPO)
    acc = next(s for s in seq if s.key == "accumulation")
    assert acc.how == "measured" and acc.args_change is not None
    assert "--gradient-accumulation-steps" in acc.args_change and "4" in acc.args_change  # batch 8 -> 4, accumulation 1 -> 2


def test_fitting_imports_no_ui_and_no_torch() -> None:
    """memtop.fitting is measurement arithmetic: no textual, rich or plotext, and no torch in `memtop fit` itself."""
    import subprocess

    code = (
        "import sys, memtop.fitting.capacity, memtop.fitting.report, memtop.fitting.probes, memtop.fitting.scaling, memtop.fitting.sizes;"
        "print(sorted(m for m in ('plotext', 'textual', 'rich', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.strip()
    assert out == "[]"


def test_a_category_small_at_the_probes_still_grows() -> None:
    """A few KiB of activations at batch 1 and 2 is a line, not a constant: at 64 it may be the peak."""
    c = fit_curve([1, 2], [5_000, 10_000])
    assert c.kind == "linear" and c(64) == pytest.approx(320_000)
