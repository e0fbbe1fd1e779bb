"""`memtop runs`: newest first, with name, status, steps, peak and command; bad input."""

from __future__ import annotations

import json
from pathlib import Path

from clikit import assert_one_line_error, memtop
from runfactory import GiB, make_run


def test_lists_newest_first_with_peak(tmp_path: Path) -> None:
    make_run(tmp_path, "20261122-100000-old", steps=5, t0=1_700_000_000.0, command=["python", "a.py"])
    make_run(tmp_path, "20261122-110000-new", steps=7, t0=1_700_100_000.0, device="cpu", command=["python", "b.py", "--x", "1"])
    make_run(tmp_path, "20261122-105000-crashed", steps=3, t0=1_700_050_000.0, status="oom", exit_code=1)
    (tmp_path / "not-a-run").mkdir()
    proc = memtop("runs", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["run", "name", "status", "steps", "peak", "command"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["20261122-110000-new", "20261122-105000-crashed", "20261122-100000-old"]
    assert "new" in lines[1] and "finished" in lines[1] and "14.0 GiB*" in lines[1] and "python b.py --x 1" in lines[1]
    assert "oom" in lines[2]
    assert "tracked bytes" in proc.stdout  # the footnote for CPU runs
    data = json.loads(memtop("runs", "--json", "--runs-dir", str(tmp_path)).stdout)
    assert [r["name"] for r in data["runs"]] == ["new", "crashed", "old"]
    assert data["runs"][2]["peak_bytes"] == 14 * GiB + 512 * 1024 * 1024
    assert data["runs"][0]["peak_measure"] == "tracked"
    limited = memtop("runs", "-n", "1", "--runs-dir", str(tmp_path)).stdout.splitlines()
    assert len([ln for ln in limited if ln.startswith("2026")]) == 1


def test_empty_and_missing_runs_dir(tmp_path: Path) -> None:
    proc = memtop("runs", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0 and "no runs in" in proc.stdout
    assert_one_line_error(memtop("runs", "--runs-dir", str(tmp_path / "nope")), 2, "no runs directory")
    assert_one_line_error(memtop("runs", "-n", "0", "--runs-dir", str(tmp_path)), 2, "--limit")


def test_broken_runs_still_listed(tmp_path: Path) -> None:
    run = make_run(tmp_path, "20261122-100000-broken", steps=3)
    (run / "meta.json").unlink()
    (run / "rank0.jsonl").write_text("garbage\n")
    proc = memtop("runs", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "20261122-100000-broken" in proc.stdout and "unknown" in proc.stdout
