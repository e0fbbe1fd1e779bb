"""The hook's record writer: the rank is looked up rarely, a new file starts with a full record,
and the step index follows the file (or stops) when something unusual happens."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from longrun import hook_record

from memtop.profiler import rankfile, step_index
from memtop.profiler.writers import RankFileWriter


def _put_steps(writer: RankFileWriter, n: int, start: int = 1) -> None:
    rng = random.Random(start)
    for s in range(start, start + n):
        writer.put(hook_record(s, rng, spike=-1))


def test_the_distributed_rank_is_asked_rarely_and_a_late_rank_still_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    rank: list[int | None] = [None]

    def fake_rank() -> int | None:
        calls.append(1)
        return rank[0]

    monkeypatch.setattr(rankfile, "distributed_rank", fake_rank)
    writer = RankFileWriter(tmp_path, 0)
    _put_steps(writer, 300)
    assert len(calls) <= 300 // RankFileWriter.RANK_CHECK_EVERY + 8  # not once per record
    rank[0] = 3  # init_process_group after the first steps
    _put_steps(writer, RankFileWriter.RANK_CHECK_EVERY + 1, start=301)
    assert writer.path == tmp_path / "rank3.jsonl"
    n = len(calls)
    _put_steps(writer, 100, start=400)
    assert len(calls) == n  # settled: never asked again
    writer.close()


def test_the_step_index_follows_a_rank_move_and_describes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_index, "CHUNK_STEPS", 64)
    rank: list[int | None] = [None]
    monkeypatch.setattr(rankfile, "distributed_rank", lambda: rank[0])
    writer = RankFileWriter(tmp_path, 0)
    _put_steps(writer, 200)
    assert (tmp_path / "rank0.jsonl.idx").is_file()
    rank[0] = 2
    _put_steps(writer, 100, start=201)
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank2.jsonl", "rank2.jsonl.idx"]
    data = (tmp_path / "rank2.jsonl").read_bytes()
    chunks = [json.loads(ln) for ln in (tmp_path / "rank2.jsonl.idx").read_text().splitlines()]
    assert [c["steps"] for c in chunks] == [64, 64, 64, 64, 44]
    assert chunks[-1]["end"] == len(data) and all(a["end"] == b["start"] for a, b in zip(chunks, chunks[1:], strict=False))
    for c in chunks:
        lines = data[c["start"] : c["end"]].splitlines()
        assert len(lines) == c["lines"] == c["steps"]
        s, e = c["level_at"]
        peaks = [json.loads(ln)["peak"] for ln in lines]
        assert c["level"] == max(peaks) and json.loads(data[s:e])["peak"] == c["level"]


def test_a_failed_write_ends_the_index_and_the_next_step_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_index, "CHUNK_STEPS", 16)
    writer = RankFileWriter(tmp_path, 0)
    _put_steps(writer, 40)
    real_write = __import__("os").write
    monkeypatch.setattr("memtop.profiler.writers.os.write", lambda fd, data: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    _put_steps(writer, 1, start=41)
    assert writer.failed_writes == 1
    monkeypatch.setattr("memtop.profiler.writers.os.write", real_write)
    _put_steps(writer, 5, start=42)
    writer.close()
    assert writer.index is not None and writer.index.dead
    lines = (tmp_path / "rank0.jsonl").read_bytes().splitlines()
    assert b'"base":' not in lines[40]  # the step after the failed one is a full record
    chunks = (tmp_path / "rank0.jsonl.idx").read_text().splitlines()
    assert len(chunks) == 2  # what was written before still describes the file's start
