"""Proof of the advisor's estimates: profile a sample run on CPU, apply the suggested change (the
suggestion's own command line), profile again, and compare the estimated saving with the measured
one in the category the suggestion targets. Also: the leak verdict on the transformer's --leak mode,
and silence on the normal runs. Results and commands: docs/validation/advisor-cpu.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import advisor_validation as av  # noqa: E402

from memtop.analyzers.leak import analyze as analyze_leak  # noqa: E402
from memtop.analyzers.series import rank_series  # noqa: E402
from memtop.runs.reader import load_run  # noqa: E402

STEPS = 3
REQUIRED = [c for c in av.CASES if c.required]


@pytest.mark.slow
@pytest.mark.parametrize("case", REQUIRED, ids=[c.rule for c in REQUIRED])
def test_estimate_within_tolerance_of_the_measured_saving(case: av.Case, tmp_path: Path) -> None:
    result = av.run_case(case, tmp_path, STEPS)
    assert result.suggestion is not None, result.error
    assert result.suggestion.command is not None, "the change is a command line of the script's own flags"
    assert result.measured is not None and result.measured > 0
    assert result.ok, f"estimated {result.suggestion.saving_bytes}, measured {result.measured} ({result.relative_error:.1%})"


@pytest.mark.slow
def test_leak_found_in_leak_mode_and_silent_on_the_normal_run(tmp_path: Path) -> None:
    base = ["python", "sample_runs/transformer_finetune.py", "--batch-size", "8", "--seq-len", "64"]
    leaky = av.profile([*base, "--leak"], tmp_path, 20, "leak")
    normal = av.profile(base, tmp_path, 20, "normal")
    found = analyze_leak(rank_series(load_run(leaky)))
    assert found.verdict == "leak", found.message
    assert found.bytes_per_step is not None and found.bytes_per_step > 0
    quiet = analyze_leak(rank_series(load_run(normal)))
    assert quiet.verdict == "none", quiet.message
