"""`memtop compare RUN_A RUN_B`: per-category before/after with differences and percents."""

from __future__ import annotations

import json
from pathlib import Path

from clikit import assert_one_line_error, memtop
from runfactory import GiB, MiB, make_run


def test_before_after_table(tmp_path: Path) -> None:
    make_run(tmp_path, "20261122-100000-before", steps=10, command=["python", "t.py", "--batch-size", "8"])
    make_run(tmp_path, "20261122-110000-after", steps=10, t0=1_700_100_000.0, command=["python", "t.py", "--batch-size", "4"], per_step=lambda s, r: {"activations": 3 * GiB, "step_time": 0.2})
    proc = memtop("compare", "--runs-dir", str(tmp_path), "before", "after")
    assert proc.returncode == 0, proc.stderr
    rows = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln and not ln.startswith(("A ", "B "))}
    assert "-3.00 GiB" in rows["activations"] and "-50.0%" in rows["activations"]
    assert "-3.00 GiB" in rows["peak"]
    assert " 0 B" in rows["parameters"] and "+0.0%" in rows["parameters"]
    data = json.loads(memtop("compare", "--json", "--runs-dir", str(tmp_path), "before", "after").stdout)
    by = {r["name"]: r for r in data["rows"]}
    assert by["activations"] == {"name": "activations", "unit": "bytes", "a": 6 * GiB, "b": 3 * GiB, "diff": -3 * GiB, "diff_pct": -50.0, "note": ""}
    assert by["step time (median)"]["a"] == 0.25 and by["step time (median)"]["b"] == 0.2
    assert by["fragmentation (mean)"]["a"] is not None
    assert set(data) == {"a", "b", "rows", "notes"}


def test_cpu_vs_cuda_is_noted(tmp_path: Path) -> None:
    make_run(tmp_path, "20261122-100000-gpu", steps=5)
    make_run(tmp_path, "20261122-110000-cpu", steps=5, device="cpu", per_step=lambda s, r: {"other": 0, "activations": 512 * MiB})
    proc = memtop("compare", "--runs-dir", str(tmp_path), "gpu", "cpu")
    assert proc.returncode == 0
    assert "different devices" in proc.stdout and "measure different things" in proc.stdout


def test_bad_input(tmp_path: Path) -> None:
    make_run(tmp_path, "20261122-100000-one", steps=5)
    assert_one_line_error(memtop("compare", "--runs-dir", str(tmp_path), "one", "missing"), 2, "no run 'missing'")
    assert_one_line_error(memtop("compare", "--runs-dir", str(tmp_path), "one"), 2, "required")
    empty = tmp_path / "20261122-120000-empty"
    empty.mkdir()
    (empty / "rank0.jsonl").write_text("{broken\n")
    assert_one_line_error(memtop("compare", "--runs-dir", str(tmp_path), "one", str(empty)), 1, "nothing could be read")
