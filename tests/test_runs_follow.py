"""The one run follower (RankTail): partial lines held back, truncation and rotation handled."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from runfactory import step_record

from memtop.runs.reader import RankTail, StepRecord


def _lines(*steps: int) -> bytes:
    return b"".join(json.dumps(step_record(s)).encode() + b"\n" for s in steps)


def _steps(recs: Sequence[object]) -> list[int]:
    return [r.step for r in recs if isinstance(r, StepRecord)]


def test_partial_line_is_held_until_complete(tmp_path: Path) -> None:
    path = tmp_path / "rank0.jsonl"
    whole = _lines(1, 2)
    path.write_bytes(whole[:-20])
    tail = RankTail(path)
    assert _steps(tail.poll()) == [1]
    with open(path, "ab") as fh:
        fh.write(whole[-20:])
    assert _steps(tail.poll()) == [2]
    assert tail.bad_lines == 0


def test_truncated_file_is_read_again_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "rank0.jsonl"
    path.write_bytes(_lines(1, 2, 3))
    tail = RankTail(path)
    assert _steps(tail.poll()) == [1, 2, 3]
    path.write_bytes(_lines(10))  # truncated and rewritten, shorter than before
    assert _steps(tail.poll()) == [10]
    assert tail.restarts == 1


def test_rotated_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "rank0.jsonl"
    path.write_bytes(_lines(1, 2))
    tail = RankTail(path)
    assert _steps(tail.poll()) == [1, 2]
    fresh = tmp_path / "new.jsonl"
    fresh.write_bytes(_lines(5, 6, 7))  # longer than what was read: only the inode tells
    os.replace(fresh, path)
    assert _steps(tail.poll()) == [5, 6, 7]
    assert tail.restarts == 1


def test_a_file_that_turns_odd_is_reported_not_read(tmp_path: Path) -> None:
    path = tmp_path / "rank0.jsonl"
    path.write_bytes(_lines(1))
    tail = RankTail(path)
    assert _steps(tail.poll()) == [1]
    path.unlink()
    os.mkfifo(path)
    assert tail.poll() == [] and tail.error is not None and "FIFO" in tail.error
