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
    r = av.leak_case(tmp_path, steps=20)
    assert r.leaky_verdict == "leak", r
    assert r.leaky_rate is not None and r.leaky_rate > 0
    assert r.normal_verdict == "none", r
