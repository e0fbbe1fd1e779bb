"""`memtop analyze` through the real CLI: the report, its JSON keys, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clikit import assert_one_line_error, memtop
from runfactory import GiB, MiB, make_run

from memtop.runs.rundir import update_meta

# The documented, stable top-level and section keys of `memtop analyze --json` (docs/analyze.md).
TOP_KEYS = {"report_version", "run", "warnings", "unmeasured", "peak", "timeline", "fragmentation", "leak", "oom", "stages", "ranks", "suggestions"}
RUN_KEYS = {"id", "path", "command", "cwd", "status", "exit_code", "started_at", "ended_at", "duration_s", "device", "ranks", "steps", "first_step", "last_step", "sampled", "exception"}
PEAK_KEYS = {"rank", "step", "bytes", "measure", "percent_of_device", "device_total_bytes", "peak_point", "allocated", "reserved", "tracked", "breakdown", "large_tensors"}
FRAG_KEYS = {
    "measurable", "rank", "percent_last", "percent_mean", "percent_max", "pct_per_1k_steps", "trend", "bytes_at_peak_reserved",
    "reserved_max", "waste_bytes", "waste_pct_median", "inactive_split_bytes", "expandable_segments_saving", "saving_basis",
    "cache_releases", "verdict", "message",
}
LEAK_KEYS = {
    "verdict", "rank", "measure", "warmup_steps", "window_first_step", "window_last_step", "bytes_per_step", "growth_bytes",
    "growing_series", "growing_categories", "tensors", "trends", "steps_until_full", "message",
}
SUGGESTION_KEYS = {"rule", "title", "reason", "saving_bytes", "cost", "change", "confidence", "category", "command", "env", "assumption"}
OOM_KEYS = {
    "step", "rank", "device", "message", "requested_bytes", "device_free", "device_total", "allocated", "reserved", "reserved_unused",
    "held", "large_tensors", "shortfall_bytes", "fits_with", "smallest_batch", "explanation", "alternatives", "request_too_large", "request_flag",
}


def test_text_report_has_every_section(tmp_path: Path) -> None:
    make_run(tmp_path, steps=30, command=["python", "train.py", "--batch-size", "8"])
    proc = memtop("analyze", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for section in ("PEAK", "TIMELINE", "FRAGMENTATION", "LEAK", "SUGGESTIONS"):
        assert f"\n{section}" in out
    assert "14.5 GiB at step 1" in out
    assert "activations" in out and "41.4%" in out
    assert "\x1b[" not in out  # no colour codes when piped


def test_json_keys_are_the_documented_ones(tmp_path: Path) -> None:
    oom = {"type": "oom", "schema": 1, "rank": 0, "time": 1.0, "step": 31, "device": "cuda:0", "message": "CUDA out of memory. Tried to allocate 2.00 GiB", "requested_bytes": 2 * GiB, "categories": {"parameters": 2 * GiB, "gradients": 2 * GiB, "optimizer_state": 4 * GiB, "activations": 60 * GiB, "other": GiB}, "allocated": 69 * GiB, "reserved": 70 * GiB, "device_free": 512 * MiB, "large_tensors": []}
    make_run(tmp_path, steps=30, status="oom", exit_code=1, extra_records=[oom])
    proc = memtop("analyze", "--json", "--runs-dir", str(tmp_path), "latest")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert set(rep) == TOP_KEYS
    assert rep["report_version"] == 1
    assert set(rep["run"]) == RUN_KEYS
    assert set(rep["peak"]) == PEAK_KEYS
    assert [b["category"] for b in rep["peak"]["breakdown"]] == ["parameters", "gradients", "optimizer_state", "activations", "other"]
    assert set(rep["fragmentation"]) == FRAG_KEYS
    assert set(rep["leak"]) == LEAK_KEYS
    assert set(rep["oom"]) == OOM_KEYS
    assert rep["suggestions"] and all(set(s) == SUGGESTION_KEYS for s in rep["suggestions"])
    assert rep["oom"]["shortfall_bytes"] == 2 * GiB - 512 * MiB
    # 1 GiB sat reserved but unused: not enough for expandable segments alone; half the batch (3 GiB) is
    assert rep["oom"]["reserved_unused"] == GiB
    assert rep["oom"]["fits_with"]["rule"] == "batch_accumulation"
    assert rep["timeline"][0]["steps"] == 30


def test_cpu_run_says_what_cannot_be_measured(tmp_path: Path) -> None:
    make_run(tmp_path, steps=10, device="cpu")
    rep = json.loads(memtop("analyze", "--json", "--runs-dir", str(tmp_path)).stdout)
    assert rep["peak"]["measure"] == "tracked"
    assert rep["peak"]["bytes"] == 14 * GiB
    assert rep["peak"]["breakdown"][-1] == {"category": "other", "bytes": None, "percent": None, "highwater": None}
    assert rep["fragmentation"]["measurable"] is False
    assert any("CPU" in u for u in rep["unmeasured"])
    text = memtop("analyze", "--runs-dir", str(tmp_path)).stdout
    assert "cannot be measured on CPU" in text


def test_stages_and_ranks(tmp_path: Path) -> None:
    stages = [
        {"type": "stage", "schema": 1, "rank": 0, "time": 1.0, "name": n, "step": s, "duration": d, "before": b, "after": b + 10 * MiB, "peak": b + 50 * MiB, "measure": "cuda_allocated"}
        for s in range(1, 4)
        for n, d, b in (("load", 0.1, GiB), ("encode", 0.3, 2 * GiB))
    ]
    make_run(tmp_path, steps=20, ranks=2, extra_records=stages, per_step=lambda s, r: {"activations": (6 if r == 0 else 9) * GiB})
    rep = json.loads(memtop("analyze", "--json", "--runs-dir", str(tmp_path)).stdout)
    assert [s["name"] for s in rep["stages"]] == ["load", "encode"]
    assert rep["stages"][1]["count"] == 3 and rep["stages"][1]["peak_max"] == 2 * GiB + 50 * MiB
    assert rep["ranks"]["verdict"] == "imbalanced" and rep["ranks"]["heaviest"] == 1
    assert rep["peak"]["rank"] == 1
    text = memtop("analyze", "--no-plot", "--runs-dir", str(tmp_path)).stdout
    assert "\nSTAGES" in text and "\nRANKS" in text


def test_crashed_run_with_oom_before_the_first_step(tmp_path: Path) -> None:
    run = tmp_path / "20261122-120000-oom"
    make_run(tmp_path, run.name, steps=0, status="oom", exit_code=1)
    (run / "rank0.jsonl").write_text(
        json.dumps({"type": "oom", "schema": 1, "rank": 0, "time": 1.0, "step": 0, "device": "cuda:0", "message": "CUDA out of memory. Tried to allocate 4.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which 1.00 GiB is free.", "requested_bytes": None, "categories": {"parameters": 20 * GiB, "gradients": 0, "optimizer_state": 0, "activations": 50 * GiB, "other": 7 * GiB}, "allocated": 77 * GiB, "reserved": 78 * GiB, "device_free": None, "large_tensors": []})
        + "\n"
        + '{"type": "step", "schema": 1, "step": 1, "tim'  # truncated last line: the crash
    )
    update_meta(run, detected_flags=[{"flag": "--batch-size", "value": "16", "dest": "batch_size", "kind": "int", "choices": None, "source": "argparse"}], command=["python", "t.py", "--batch-size", "16"])
    proc = memtop("analyze", "--json", str(run))
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    o = rep["oom"]
    assert o["requested_bytes"] == 4 * GiB and o["device_free"] == GiB  # parsed from the message
    assert o["shortfall_bytes"] == 3 * GiB
    assert o["smallest_batch"] == {"flag": "--batch-size", "from": 16, "to": 15, "saving_bytes": int(50 * GiB / 16)}
    assert rep["peak"] is None
    assert any("unreadable line" in w for w in rep["warnings"])
    text = memtop("analyze", str(run)).stdout
    assert "OUT OF MEMORY" in text and "asked for 4.00 GiB" in text


# --- bad input: one line on stderr, a non-zero exit, never a traceback -----------------------------


def test_no_runs_directory(tmp_path: Path) -> None:
    assert_one_line_error(memtop("analyze", "--runs-dir", str(tmp_path / "nope")), 2, "no runs directory")


def test_empty_runs_directory(tmp_path: Path) -> None:
    assert_one_line_error(memtop("analyze", "--runs-dir", str(tmp_path)), 2, "no runs in")


def test_run_that_does_not_exist(tmp_path: Path) -> None:
    make_run(tmp_path, steps=3)
    assert_one_line_error(memtop("analyze", "--runs-dir", str(tmp_path), "20991231-000000-nope"), 2, "no run")
    assert_one_line_error(memtop("analyze", str(tmp_path / "not-a-dir")), 2, "no run")


def test_directory_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    assert_one_line_error(memtop("analyze", str(tmp_path / "x")), 2, "not a memtop run directory")


def test_run_with_nothing_readable(tmp_path: Path) -> None:
    run = tmp_path / "20261122-120000-junk"
    run.mkdir()
    (run / "rank0.jsonl").write_bytes(b"\x00\xff garbage\n{not json\n[1,2]\n")
    assert_one_line_error(memtop("analyze", str(run)), 1, "nothing could be read")
    assert_one_line_error(memtop("analyze", "--json", str(run)), 1, "nothing could be read")


def test_run_just_started_has_meta_only(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=0, status="running", exit_code=None)
    (run / "rank0.jsonl").write_text("")
    assert_one_line_error(memtop("analyze", str(run)), 1, "still starting")


@pytest.mark.parametrize(
    "mutate, warning",
    [
        ("missing_meta", "meta.json is missing"),
        ("schema", "unknown schema version 99"),
        ("garbage", "unreadable line"),
        ("being_written", "still going"),
    ],
)
def test_partial_report_with_a_warning(tmp_path: Path, mutate: str, warning: str) -> None:
    run = make_run(tmp_path, steps=12)
    rank0 = run / "rank0.jsonl"
    if mutate == "missing_meta":
        (run / "meta.json").unlink()
    elif mutate == "schema":
        update_meta(run, schema=99)
    elif mutate == "garbage":
        lines = rank0.read_text().splitlines()
        lines.insert(3, "not json at all")
        lines.insert(5, '{"type": 7}')
        rank0.write_text("\n".join(lines) + "\n\x00\x01")
    elif mutate == "being_written":
        update_meta(run, status="running", ended_at=None, exit_code=None)
        with open(rank0, "a") as fh:
            fh.write('{"type": "step", "schema": 1, "step": 13, "peak": 12')  # half a record
    for args in (["analyze", str(run)], ["analyze", "--json", str(run)]):
        proc = memtop(*args)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert warning in proc.stdout, proc.stdout[-2000:]


def test_usage_error_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(memtop("analyze", "--bogus"), 2, "unrecognized arguments")
