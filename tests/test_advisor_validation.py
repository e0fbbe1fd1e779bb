"""Proof of the advisor on scripts in the shapes users have (benchmarks/scripts/) and the sample
runs: every suggested command line is accepted by the script it is for, and applying a suggestion
changes the measured step peak by what it estimated (±15%). The full table, every script and every
suggestion: ``python benchmarks/advisor_validation.py`` → docs/validation/advisor-cpu.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import advisor_validation as av  # noqa: E402

STEPS = 3
BY_NAME = {s.name: s for s in av.SCRIPTS}
ACCEPTS = ["nanoGPT-style configurator", "HF Trainer-style"]
# the short form: the two batch changes of the script without an accumulation flag (the full table
# covers every script and every suggestion)
TOLERANCE_CHECKED = {"plain loop (no accumulation flag)": {"batch_accumulation", "smaller_batch"}}


@pytest.mark.slow
@pytest.mark.parametrize("name", ACCEPTS)
def test_every_suggested_command_is_accepted_by_the_script(name: str, tmp_path: Path) -> None:
    script = BY_NAME[name]
    _, sugs = av.baseline_suggestions(script, tmp_path, 2)
    for i, s in enumerate(x for x in sugs if x.command is not None):
        assert s.command is not None
        av.profile(tuple(s.command), tmp_path, 1, f"accept-{i}-{s.rule}", s.env, script.cwd)  # raises on a non-zero exit


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOLERANCE_CHECKED))
def test_applied_suggestions_change_the_peak_as_estimated(name: str, tmp_path: Path) -> None:
    results = av.run_script(BY_NAME[name], tmp_path, STEPS, TOLERANCE_CHECKED[name])
    applied = [r for r in results if r.after is not None]
    assert applied, [r.applied for r in results]
    for r in applied:
        assert r.ok, f"{r.suggestion.rule}: estimated {r.suggestion.saving_bytes}, measured {r.measured}"
    if name == "plain loop (no accumulation flag)":
        rules = {r.suggestion.rule: r for r in results}
        # the script has no accumulation flag: accumulation is a code change, the bare flag says what it changes
        assert rules["batch_accumulation"].suggestion.command is None
        assert "effective batch" in rules["smaller_batch"].suggestion.cost


@pytest.mark.slow
def test_leak_found_in_leak_mode_and_silent_on_the_normal_run(tmp_path: Path) -> None:
    r = av.leak_case(tmp_path, steps=20)
    assert r.leaky_verdict == "leak", r
    assert r.leaky_rate is not None and r.leaky_rate > 0
    assert r.normal_verdict == "none", r


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("rule", ["batch_accumulation", "gradient_checkpointing", "mixed_precision"])
def test_on_cuda_the_allocator_peak_changes_as_estimated(rule: str, tmp_path: Path) -> None:
    """The sample transformer picks CUDA itself; the peak is then the allocator's, with `other`."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    results = av.run_script(BY_NAME["sample: transformer fine-tune"], tmp_path, STEPS, {rule})
    applied = [r for r in results if r.after is not None]
    assert applied and all(r.baseline is not None and r.baseline.measure == "allocator_peak" for r in applied)
    for r in applied:
        assert r.ok, f"{r.suggestion.rule}: estimated {r.suggestion.saving_bytes}, measured {r.measured}"
