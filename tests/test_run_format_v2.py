"""Run format v2: step records written as full records and deltas, rebuilt by every reader.

The ground truth is what a writer of full records writes for the same record dicts
(``RecordEncoder(deltas=False)``, run format v1's writer), captured while the real hook runs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import memtop
from memtop.analyzers.load import load_for_analysis
from memtop.profiler import writers
from memtop.profiler.step_delta import FULL_EVERY
from memtop.profiler.writers import RankFileWriter, RecordEncoder
from memtop.runs.decode import Skip, StepRebuilder, decode_line
from memtop.runs.reader import RankTail, StepRecord, load_run, read_file
from memtop.runs.records import Record
from memtop.tui.reader import read_tail_records

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "runs" / "20231114-221320-gaussian_splat"


def _docs(recs: Sequence[Record]) -> list[dict[str, Any]]:
    return [dict(r.doc) for r in recs if isinstance(r, StepRecord)]


def _profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str) -> tuple[Path, list[dict[str, Any]]]:
    """A real training profiled by the hook (60 steps; the batch grows at step 31, so the moments
    and the large tensors change once), and the step records a full-record writer would have
    written for it, in order."""
    monkeypatch.setenv("MEMTOP_TENSORBOARD", "0")
    full = RecordEncoder(deltas=False)
    truth: list[dict[str, Any]] = []
    original = RankFileWriter.write

    def spy(self: RankFileWriter, record: dict[str, Any]) -> None:
        original(self, record)
        if record.get("type") == "step":
            truth.append(json.loads(full.encode(copy.deepcopy(record))))

    original_repeat = RankFileWriter.put_repeat

    def spy_repeat(self: RankFileWriter, last: dict[str, Any], time: float, step: int, step_time: float | None, used: int | None) -> None:
        original_repeat(self, last, time, step, step_time, used)  # a repeat of the last record: no dict made
        rec = writers.repeat_record(last, time, step, step_time, used)
        rec["rank"] = self.rank
        truth.append(json.loads(full.encode(rec)))

    monkeypatch.setattr(writers.RankFileWriter, "write", spy)
    monkeypatch.setattr(writers.RankFileWriter, "put_repeat", spy_repeat)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        for i in range(60):
            batch = 32 if i < 30 else 96
            model(torch.randn(batch, 64, device=device)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        run_dir = prof.run_dir
    return run_dir, truth


@pytest.fixture
def profiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[dict[str, Any]]]:
    return _profile(tmp_path, monkeypatch, "cpu")


@pytest.mark.gpu
def test_on_cuda_every_step_rebuilds_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, truth = _profile(tmp_path, monkeypatch, "cuda")
    assert all(isinstance(t["peak"], int) for t in truth)
    assert _docs(load_run(run_dir).steps(0)) == truth
    data, _ = load_for_analysis(run_dir, limit=7, save_index=False)
    assert all(doc in truth for doc in _docs(data.records[0]))


def test_the_hook_writes_schema_2_deltas_that_every_reader_rebuilds_exactly(profiled: tuple[Path, list[dict[str, Any]]]) -> None:
    run_dir, truth = profiled
    lines = (run_dir / "rank0.jsonl").read_bytes().splitlines()
    steps = [ln for ln in lines if ln.startswith(b'{"type":"step"')]
    assert len(steps) == len(truth) == 60
    deltas = [ln for ln in steps if ln.startswith(b'{"type":"step","schema":2,"base":')]
    assert len(deltas) > 30  # most steps are deltas
    assert sum(map(len, steps)) < 0.5 * sum(len(json.dumps(t, separators=(",", ":"))) for t in truth)
    assert all(t["schema"] == 2 for t in truth)
    # the one sequential rebuild: load_run / read_file (RankTail), and the analysis loader
    assert _docs(load_run(run_dir).steps(0)) == truth
    assert _docs(read_file(run_dir / "rank0.jsonl")[0]) == truth
    _, series = load_for_analysis(run_dir, save_index=False)
    data, _ = load_for_analysis(run_dir, limit=7, save_index=False)  # sampled: deltas decoded anywhere
    sampled = _docs(data.records[0])
    assert sampled and all(doc in truth for doc in sampled)
    assert series[0].total_steps == 60
    # the dashboard's first look at a long file reads only its last bytes
    tail, _ = read_tail_records(run_dir / "rank0.jsonl", 4096)  # deltas without their base: left out
    assert all(doc in truth for doc in _docs(tail))
    tail, _ = read_tail_records(run_dir / "rank0.jsonl", 1 << 20)
    assert _docs(tail) == truth
    # a follower that reads the file in small pieces as it grows
    follower = RankTail(run_dir / "rank0.jsonl")
    got: list[Record] = []
    for _ in range(500):
        got += follower.poll(max_bytes=700)
    got += follower.poll(final=True)
    assert _docs(got) == truth and not follower.skipped


def test_a_delta_read_alone_is_skipped_never_misread() -> None:
    enc = RecordEncoder()
    recs = [_record(s) for s in range(1, 4)]
    lines = [enc.encode(r).rstrip(b"\n") for r in recs]
    assert b'"base":1' in lines[1]
    assert decode_line(lines[1]) == Skip("no_base", "a delta read without its base")
    rb = StepRebuilder()
    assert [isinstance(rb.decode(ln), StepRecord) for ln in lines] == [True, True, True]


def test_a_lost_or_garbled_base_makes_its_deltas_counted_skips(tmp_path: Path) -> None:
    enc = RecordEncoder()
    full = RecordEncoder(deltas=False)
    lines, truth = [], []
    for s in range(1, 2 * FULL_EVERY):
        rec = _record(s, other=7 if s > FULL_EVERY + 5 else 5)  # a change: deltas carry it
        truth.append(json.loads(full.encode(copy.deepcopy(rec))))
        lines.append(enc.encode(rec))
    fulls = [i for i, ln in enumerate(lines) if b'"base":' not in ln]
    assert fulls == [0, FULL_EVERY]  # the first record, then every FULL_EVERY step lines
    for damage in ("drop", "garble", "truncate"):
        broken = list(lines)
        if damage == "drop":
            del broken[FULL_EVERY]
        elif damage == "garble":
            broken[FULL_EVERY] = broken[FULL_EVERY][:40] + b"\x00garbage\n"
        else:
            broken[FULL_EVERY] = broken[FULL_EVERY][: len(broken[FULL_EVERY]) // 2] + b"\n"
        path = tmp_path / damage / "rank0.jsonl"
        path.parent.mkdir()
        path.write_bytes(b"".join(broken))
        recs, skipped, _ = read_file(path)
        docs = _docs(recs)
        assert docs == truth[:FULL_EVERY]  # never a wrong record: every one rebuilt is the truth
        assert skipped["no_base"] == len(lines) - FULL_EVERY - 1
        # the analysis loader, decoding lines anywhere, agrees
        data, _ = load_for_analysis(path.parent, limit=50, save_index=False)
        assert all(doc in truth[:FULL_EVERY] for doc in _docs(data.records[0]))
        assert data.skipped["no_base"] > 0


def test_run_format_v1_still_reads_unchanged() -> None:
    raw = [json.loads(ln) for ln in (FIXTURE / "rank0.jsonl").read_text().splitlines() if ln.strip()]
    data = load_run(FIXTURE)
    assert not data.skipped
    assert _docs(data.steps(0)) == [r for r in raw if r["type"] == "step"]
    assert {r.schema for r in data.steps(0)} == {1}


def _record(step: int, other: int = 5) -> dict[str, Any]:
    moment = {"allocated": 100, "parameters": 10, "gradients": 0, "optimizer_state": 20, "activations": 30}
    return {
        "type": "step", "schema": 2, "rank": 0, "time": 1_700_000_000.0 + step, "step": step, "device": "cuda:0",
        "step_time": 0.5, "allocated": 100 + step % 3, "reserved": 200, "peak": 65 + other,
        "categories": {"parameters": 10, "gradients": 0, "optimizer_state": 20, "activations": 30, "other": other},
        "peak_point": "forward_end", "activations_step": step - step % 4, "measured_step": step - step % 4, "tracked": 60,
        "fragmentation_bytes": 100 - step % 3, "fragmentation_pct": 50.0, "inactive_split_bytes": 0,
        "device_used": 300, "device_total": 1000, "large_tensors": [],
        "moments": {"forward_end": moment}, "highwater": {"parameters": 10, "gradients": 0, "optimizer_state": 20, "activations": 30},
        "sample_every": 4,
    }  # fmt: skip


def test_an_overlong_full_record_leaves_its_deltas_without_a_base(tmp_path: Path) -> None:
    enc = RecordEncoder()
    lines = [enc.encode(_record(s)) for s in range(1, 4)]  # full, delta, delta
    huge = _record(4)
    huge["extra"] = "x" * (1 << 20)  # a full step record over 1 MiB: skipped whole
    lines.append(json.dumps(huge, separators=(",", ":")).encode() + b"\n")
    delta = json.loads(lines[1])
    delta.update(base=4, step=5)
    lines.append(json.dumps(delta, separators=(",", ":")).encode() + b"\n")  # names the lost record
    path = tmp_path / "run" / "rank0.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"".join(lines))
    for chunk in (64, 1 << 22):  # the follower in small pieces, and whole
        tail = RankTail(path)
        got: list[Record] = []
        for _ in range(40000):
            got += tail.poll(max_bytes=chunk)
            if tail.offset >= path.stat().st_size:
                break
        got += tail.poll(final=True)
        assert [r.step for r in got if isinstance(r, StepRecord)] == [1, 2, 3]
        assert tail.skipped == {"too_long": 1, "no_base": 1}
    data, _ = load_for_analysis(path.parent, save_index=False)
    assert sorted(r.step for r in data.steps(0)) == [1, 2, 3]
    assert data.skipped == {"too_long": 1, "no_base": 1}


def test_moments_that_move_every_step_stay_in_deltas(tmp_path: Path) -> None:
    """On CUDA the allocator's figure at each moment moves a little from step to step: the moments
    then travel in the delta (whole), not as a full record with its large-tensor list every step."""
    enc = RecordEncoder()
    full = RecordEncoder(deltas=False)
    recs = []
    for s in range(1, 301):
        rec = _record(s)
        rec["large_tensors"] = [{"name": f"model.w{i}", "category": "parameters", "bytes": 1 << 20, "shape": [512, 512], "dtype": "torch.float32"} for i in range(8)]
        rec["moments"] = {
            "forward_end": {"allocated": 1000 + s % 7, "parameters": 10, "gradients": 0, "optimizer_state": 20, "activations": 30 + s % 5},
            "optimizer_step": {"allocated": 900 + s % 3, "parameters": 10, "gradients": 10, "optimizer_state": 20, "activations": 0},
        }
        recs.append(rec)
    lines = [enc.encode(copy.deepcopy(r)) for r in recs]
    truth = [json.loads(full.encode(copy.deepcopy(r))) for r in recs]
    fulls = [ln for ln in lines if not ln.startswith(b'{"type":"step","schema":2,"base":')]
    assert len(fulls) == 2  # the first step line and the 256th: nothing else forces a full record
    assert sum(map(len, lines)) < 0.4 * sum(map(len, (full.encode(copy.deepcopy(r)) for r in recs)))
    path = tmp_path / "run" / "rank0.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"".join(lines))
    assert _docs(read_file(path)[0]) == truth
    data, _ = load_for_analysis(path.parent, limit=7, save_index=False)  # deltas decoded anywhere
    assert all(doc in truth for doc in _docs(data.records[0]))
