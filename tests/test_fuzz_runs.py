"""Fuzz: mutated real runs through analyze, compare and export (tests/runfuzz.py says how).

A few hundred seeded cases per CI run; benchmarks/fuzz_runs.py runs ≥10,000 with other seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runfuzz import run_cases

CASES = 200


@pytest.fixture
def no_flag_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing found in a run directory is ever run; this only keeps the advisor off the disk."""
    monkeypatch.setenv("MEMTOP_NO_FLAG_DETECTION", "1")
    for k in ("MEMTOP_RUNS_DIR", "MEMTOP_RUN_DIR"):
        monkeypatch.delenv(k, raising=False)


@pytest.mark.usefixtures("no_flag_probe")
def test_mutated_runs_never_give_a_traceback(tmp_path: Path) -> None:
    tally = run_cases(tmp_path, CASES, seed=20261201)
    assert tally.calls == 3 * CASES
    assert not tally.problems, "\n\n".join(tally.problems[:5])
    # the mutations did reach the readers: some runs were refused, most still analyzed
    assert tally.codes.get("analyze exit 0", 0) > CASES // 2
    assert sum(n for k, n in tally.mutations.items() if k in ("huge", "meta_huge")) > 5
