"""The dashboard's reader: tails rank files and output.log, reads meta.json, says how a run ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from runfactory import GiB, MiB, make_run, step_record

from memtop.analyzers.suggestion import Suggestion
from memtop.runs.reader import RunData
from memtop.runs.rundir import update_meta
from memtop.tui.reader import FileRunReader, LogTail
from memtop.tui.snapshot import ChildView
from memtop.tui.suggestions import SuggestionCache, command_change, to_row


def _append(path: Path, *records: dict[str, Any], partial: str = "") -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
        fh.write(partial)


def test_cuda_run_figures(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=30)
    snap = FileRunReader(run, suggest=None).poll()
    assert snap.run_id == "20261122-120000-synthetic"
    assert snap.command == ("python", "train.py", "--batch-size", "32")
    assert snap.device_name == "NVIDIA H100 80GB HBM3"
    assert not snap.is_cpu
    rank = snap.rank(0)
    assert rank is not None and rank.last is not None
    assert rank.steps_seen == 30 and rank.last.step == 30
    assert rank.last.category("activations") == 6 * GiB
    assert rank.last.peak == sum(v for _, v in rank.last.categories if v is not None)
    assert rank.last.large_tensors[0].bytes >= rank.last.large_tensors[-1].bytes
    assert rank.last.large_tensors[0].dtype == "float32"  # "torch." prefix dropped
    assert len(rank.history) == 30
    assert rank.step_rate == pytest.approx(0.25)
    assert snap.ending() is not None and snap.ending().kind == "finished"  # type: ignore[union-attr]


def test_cpu_run_keeps_nulls(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=5, device="cpu")
    snap = FileRunReader(run, suggest=None).poll()
    assert snap.is_cpu
    last = snap.ranks[0].last
    assert last is not None
    assert last.allocated is None and last.reserved is None and last.peak is None
    assert last.category("other") is None
    assert last.tracked is not None and last.device_used is not None
    assert snap.ranks[0].history.column("peak") == (None,) * 5


def test_tailing_holds_back_a_partial_line(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=3, exit_code=None, status="running")
    reader = FileRunReader(run, suggest=None)
    snap = reader.poll()
    assert snap.last_step == 3 and snap.live
    line = json.dumps(step_record(4))
    _append(run / "rank0.jsonl", partial=line[:40])
    snap2 = reader.poll()
    assert snap2.last_step == 3
    _append(run / "rank0.jsonl", partial=line[40:] + "\n")
    snap3 = reader.poll()
    assert snap3.last_step == 4
    assert snap3.version > snap.version
    # Nothing new: the very same snapshot object comes back (cheap for the poller to skip).
    assert reader.poll() is snap3


def test_garbage_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=2)
    _append(run / "rank0.jsonl", partial='{"type": "step", "step": \nnot json\n')
    snap = FileRunReader(run, suggest=None).poll()
    assert snap.bad_lines == 2
    assert snap.last_step == 2


def test_new_rank_files_are_discovered(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=2, exit_code=None, status="running")
    reader = FileRunReader(run, suggest=None)
    assert len(reader.poll().ranks) == 1
    _append(run / "rank1.jsonl", step_record(1, rank=1, device="cuda:1"))
    snap = reader.poll()
    assert [r.rank for r in snap.ranks] == [0, 1]
    assert snap.rank(1).device == "cuda:1"  # type: ignore[union-attr]


def test_meta_changes_are_picked_up(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=2, exit_code=None, status="running")
    reader = FileRunReader(run, suggest=None)
    assert reader.poll().ending() is None
    update_meta(run, status="failed", exit_code=3, ended_at=1_700_000_100.0)
    ending = reader.poll().ending()
    assert ending is not None and ending.kind == "failed" and "3" in ending.text


def test_oom_record_makes_an_oom_ending(tmp_path: Path) -> None:
    oom = {
        "type": "oom", "schema": 1, "rank": 0, "time": 1_700_000_010.0, "step": 7, "device": "cuda:0",
        "message": "CUDA out of memory. Tried to allocate 2.00 GiB", "requested_bytes": 2 * GiB,
        "categories": {"parameters": GiB, "gradients": GiB, "optimizer_state": 2 * GiB, "activations": 70 * GiB, "other": GiB},
        "allocated": 75 * GiB, "reserved": 78 * GiB, "device_free": 300 * MiB, "large_tensors": [],
    }
    run = make_run(tmp_path, steps=6, exit_code=1, status="oom", extra_records=[oom])
    snap = FileRunReader(run, suggest=None).poll()
    ending = snap.ending()
    assert ending is not None and ending.kind == "oom"
    assert "step 7" in ending.text and "2.00 GiB" in ending.text
    # With a child, the child's own account of the exit is part of it.
    from dataclasses import replace

    with_child = replace(snap, child=ChildView(pid=1, exit_code=1, description="exited 1"))
    assert with_child.ending().kind == "oom"  # type: ignore[union-attr]
    assert "exited 1" in with_child.ending().text  # type: ignore[union-attr]


def test_child_states(tmp_path: Path) -> None:
    from dataclasses import replace

    run = make_run(tmp_path, steps=2, exit_code=None, status="running")
    snap = FileRunReader(run, suggest=None).poll()
    assert replace(snap, child=ChildView(1, None, None)).ending() is None
    assert replace(snap, child=ChildView(1, 0, "exited 0")).ending().kind == "finished"  # type: ignore[union-attr]
    killed = replace(snap, child=ChildView(1, 137, "killed by SIGKILL")).ending()
    assert killed is not None and killed.kind == "killed" and "SIGKILL" in killed.text


def test_exit_records_end_a_run_before_meta_does(tmp_path: Path) -> None:
    exit_rec = {"type": "exit", "schema": 1, "rank": 0, "time": 1_700_000_020.0, "reason": "max_steps", "steps": 4}
    run = make_run(tmp_path, steps=4, exit_code=None, status="running", extra_records=[exit_rec])
    ending = FileRunReader(run, suggest=None).poll().ending()
    assert ending is not None and ending.kind == "finished" and "max_steps" in ending.text


def test_writer_gone_is_detected_on_this_host(tmp_path: Path) -> None:
    import socket

    run = make_run(tmp_path, steps=2, exit_code=None, status="running")
    update_meta(run, host=socket.gethostname(), pid=2**22 + 12345)  # no such process
    ending = FileRunReader(run, suggest=None).poll().ending()
    assert ending is not None and ending.kind == "lost"


def test_log_tail_progress_bars_colours_and_limits(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(b"first\n\x1b[32mgreen\x1b[0m\n10%\r50%\r100%\nhalf")
    tail = LogTail(log, keep=3)
    assert tail.poll()
    assert list(tail.lines) == ["first", "green", "100%"]
    with open(log, "ab") as fh:
        fh.write(b" line\nnext\n")
    tail.poll()
    assert list(tail.lines) == ["100%", "half line", "next"]
    assert tail.total == 5


def test_log_tail_starts_near_the_end_of_a_huge_log(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(200_000)))
    tail = LogTail(log, keep=10)
    tail.poll()
    assert tail.lines[-1] == "line 199999"
    assert tail.total < 200_000  # did not read it all


def test_reader_catches_up_in_chunks(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=400)
    reader = FileRunReader(run, suggest=None, chunk_bytes=64 * 1024)
    snap = reader.poll()
    assert reader.behind and snap.behind
    polls = 1
    while reader.behind:
        snap = reader.poll()
        polls += 1
    assert polls > 3
    assert snap.last_step == 400 and snap.ranks[0].steps_seen == 400


def test_memory_is_bounded_for_long_runs(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=3000)
    reader = FileRunReader(run, suggest=None, history_points=128, window=64)
    snap = reader.poll()
    rank = snap.ranks[0]
    assert len(rank.history) <= 128
    data = reader.run_data()
    assert len(data.records[0]) <= 16 + 64 + 256


def test_suggestions_are_computed_rarely_and_survive_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=5, exit_code=None, status="running")
    calls: list[RunData] = []
    now = [0.0]

    def suggest(data: RunData) -> list[Suggestion]:
        calls.append(data)
        return [Suggestion("amp", "use bf16", "r", GiB, "c", "python train.py --amp", "high",
                           command=("python", "train.py", "--batch-size", "32", "--amp"))]

    reader = FileRunReader(run, suggest=suggest, suggest_every=5.0, monotonic=lambda: now[0])
    first = reader.poll()
    # The first picture goes out before the advisor runs (first paint), and the poller is told to come back.
    assert first.suggestions.state == "pending" and not reader.behind and not first.behind and not calls
    snap = reader.poll()
    assert not reader.behind
    assert snap.suggestions.state == "ok" and snap.suggestions.items[0].title == "use bf16"
    assert len(calls) == 1 and calls[0].meta is not None and len(calls[0].records[0]) == 5
    _append(run / "rank0.jsonl", step_record(6))
    reader.poll()
    assert len(calls) == 1  # too soon
    now[0] = 6.0
    reader.poll()
    assert len(calls) == 2
    now[0] = 20.0
    reader.poll()
    assert len(calls) == 2  # nothing new to look at

    def broken(data: RunData) -> list[Any]:
        raise ZeroDivisionError("boom")

    reader = FileRunReader(run, suggest=broken)
    reader.poll()
    snap = reader.poll()
    assert snap.suggestions.state == "error" and "boom" in snap.suggestions.message


def test_without_advisor_the_panel_says_so(tmp_path: Path) -> None:
    cache = SuggestionCache(None)
    assert cache.view.state == "unavailable"
    assert "no suggestions" in cache.view.message


def test_the_real_advisor_is_called_without_running_the_script(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=20)
    reader = FileRunReader(run)
    reader.poll()
    snap = reader.poll()
    assert snap.suggestions.state in ("ok", "error")
    assert snap.suggestions.state == "ok", snap.suggestions.message


def test_command_change_and_rows() -> None:
    old = ["python", "t.py", "--batch-size", "32"]
    assert command_change(old, [*old, "--amp"]) == "add --amp"
    assert command_change(old, ["python", "t.py", "--batch-size", "16"]) == "--batch-size 32 → 16"
    assert command_change(old, ["python", "t.py"]) == "drop --batch-size 32"
    row = to_row(Suggestion("r", "t", "why", 1_500_000_000, "c", "A=1 python t.py", "high", env=(("A", "1"),)))
    assert row.saving_bytes == 1_500_000_000 and row.confidence == "high" and row.env == (("A", "1"),)


def test_command_is_shortened_keeping_the_script() -> None:
    from memtop.tui.widgets.header import command_text

    argv = ("/opt/venv/bin/python", "sample_runs/gaussian_splat.py", "--steps", "60", "--densify-every", "15")
    assert command_text(argv, 200) == "/opt/venv/bin/python sample_runs/gaussian_splat.py --steps 60 --densify-every 15"
    assert command_text(argv, 60) == "python gaussian_splat.py --steps 60 --densify-every 15"
    short = command_text(argv, 36)
    assert short.startswith("python gaussian_splat.py ") and len(short) <= 36
    assert command_text((), 20).startswith("(command unknown")


def test_a_huge_run_shows_its_current_state_first(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=400)
    reader = FileRunReader(run, suggest=None, chunk_bytes=64 * 1024, preview_over=100 * 1024)
    first = reader.poll()
    assert reader.behind and first.behind and first.progress is not None and 0 < first.progress < 1
    rank = first.ranks[0]
    assert first.last_step == 400  # the latest figures at once ...
    assert rank.history.steps[-1] < 400  # ... while the timeline is still being read
    assert rank.steps_seen < 400
    while reader.behind:
        snap = reader.poll()
    assert snap.last_step == 400 and snap.ranks[0].steps_seen == 400 and snap.ranks[0].history.steps[-1] == 400
    assert snap.progress is None and not reader._previews
