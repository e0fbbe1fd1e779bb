"""The repeat fast path writes the bytes the general path writes.

Most steps of a CPU run repeat the last record with their own time, step, step time and resident
set size; the writer's :meth:`~memtop.profiler.writers.RankFileWriter.put_repeat` then fills the
last delta line's template instead of copying and comparing the record. Here two writers get the
same sequence of real step records (captured from a real training under the hook, some figures
changed): one is handed every repeat as a copied dict through ``put`` (the general delta path),
the other through ``put_repeat``; their record files and step indexes must be equal byte for
byte, across full records every ``FULL_EVERY`` lines, a torn write, a rank change and a closed file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memtop
from memtop.profiler import step_delta, step_index, step_journal
from memtop.profiler.writers import RankFileWriter, RecordEncoder, repeat_record
from memtop.runs.reader import StepRecord, load_run

_RECORDS: list[dict[str, Any]] = []


def real_records(tmp: Path) -> list[dict[str, Any]]:
    """The step records the hook hands its writer in a real 8-step training (measured every step)."""
    if _RECORDS:
        return _RECORDS
    handed: list[dict[str, Any]] = []
    put, put_repeat = RankFileWriter.put, RankFileWriter.put_repeat

    def keep(self: RankFileWriter, rec: dict[str, Any]) -> None:
        handed.append(copy.deepcopy(rec))
        put(self, rec)

    def keep_repeat(self: RankFileWriter, last: dict[str, Any], time: float, step: int, step_time: float | None, used: int | None) -> None:
        handed.append(repeat_record(last, time, step, step_time, used))
        put_repeat(self, last, time, step, step_time, used)

    mp = pytest.MonkeyPatch()
    mp.setattr(RankFileWriter, "put", keep)
    mp.setattr(RankFileWriter, "put_repeat", keep_repeat)
    mp.setenv("MEMTOP_TENSORBOARD", "0")
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        with memtop.profile(model, opt, runs_dir=tmp):
            for i in range(8):
                model(torch.randn(8 if i < 4 else 24, 16)).pow(2).mean().backward()
                opt.step()
                opt.zero_grad()
    finally:
        mp.undo()
    _RECORDS.extend(handed)
    return _RECORDS


_op = st.one_of(
    st.tuples(st.just("new"), st.integers(0, 7), st.integers(-2, 2)),
    st.tuples(st.just("repeat"), st.floats(0.001, 0.5), st.one_of(st.none(), st.integers(1, 2**40))),
    st.tuples(st.just("repeat"), st.floats(0.001, 0.5), st.one_of(st.none(), st.integers(1, 2**40))),
    st.tuples(st.just("repeat"), st.floats(0.001, 0.5), st.one_of(st.none(), st.integers(1, 2**40))),
    st.tuples(st.just("tear")),
    st.tuples(st.just("rank"), st.integers(0, 3)),
)


class _Tear:
    """os.write that, when armed, writes half a line, then fails (a disk filling up mid-line)."""

    def __init__(self) -> None:
        self.armed = 0
        self.real = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        if self.armed == 1:
            self.armed = 2
            return self.real(fd, data[: max(1, len(data) // 2)])
        if self.armed == 2:
            self.armed = 0
            raise OSError(28, "No space left on device")
        return self.real(fd, data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=40))
def test_put_repeat_writes_the_general_paths_bytes(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]) -> None:
    compare_paths(tmp_path_factory, ops)


def test_the_fast_path_is_taken_between_full_records(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[bool] = []
    encode_repeat = RecordEncoder.encode_repeat

    def spy(self: RecordEncoder, *args: Any) -> bytes | None:
        line = encode_repeat(self, *args)
        taken.append(line is not None)
        return line

    monkeypatch.setattr(RecordEncoder, "encode_repeat", spy)
    ops: list[tuple[Any, ...]] = [("new", 3, 0), *[("repeat", 0.01, 123456)] * 12, ("new", 5, 1), *[("repeat", 0.02, None)] * 6, ("tear",), ("repeat", 0.01, 7)]
    compare_paths(tmp_path_factory, ops)
    # FULL_EVERY is 5 here: every 5th step line is a full record, the first repeat after a
    # write that is not a delta builds its template; the rest are filled templates
    assert taken.count(True) >= 10, taken


def compare_paths(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]], journal: bool = False, crash: bool = False) -> None:
    """``journal``: the fast writer keeps its repeats in a step journal (memtop train's writer);
    ``crash``: it is never closed, its journal recovered into its file as the launcher would."""
    records = real_records(tmp_path_factory.mktemp("real"))
    assert any(tuple(r) == tuple(records[-1]) for r in records[1:])  # steps 2+ have the format's keys only
    a_dir, b_dir = tmp_path_factory.mktemp("general"), tmp_path_factory.mktemp("repeat")
    tear = _Tear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(step_delta, "FULL_EVERY", 5)
        mp.setattr(step_index, "CHUNK_STEPS", 6)
        mp.setattr("memtop.profiler.writers.os.write", tear)
        if journal:
            mp.setattr(step_journal, "CAPACITY", 7)
            mp.setenv(step_journal.ENV_DIR, str(tmp_path_factory.mktemp("journal")))
            mp.setattr(RankFileWriter, "flush_stale", lambda self: None)  # batches cut by these records' times only
        general, fast = RankFileWriter(a_dir, 0), RankFileWriter(b_dir, 0)
        last: list[dict[str, Any]] = []  # the last record handed to each writer (its own copy)
        step, now = 0, 1.7e9
        for op in ops:
            if op[0] == "new":
                rec = copy.deepcopy(records[op[1]])
                if op[2] and "categories" in rec:
                    rec["categories"]["gradients"] += op[2]  # a figure that changed
                    rec["tracked"] += op[2]
                step += 1
                now += 0.01
                rec["step"], rec["time"] = step, now
                last = [rec, copy.deepcopy(rec)]
                general.put(last[0])
                fast.put(last[1])
            elif op[0] == "repeat" and last:
                step += 1
                now += op[1]
                general.put(repeat_record(last[0], now, step, op[1], op[2]))
                fast.put_repeat(last[1], now, step, op[1], op[2])
            elif op[0] == "tear" and last:
                step += 1
                now += 0.01
                tear.armed = 1  # the next record of the general writer tears …
                general.put(repeat_record(last[0], now, step, 0.01, 5))
                tear.armed = 1  # … and the same record of the fast one
                fast.put_repeat(last[1], now, step, 0.01, 5)
            elif op[0] == "rank":
                general.rank = fast.rank = op[1]  # a rank learnt from torch.distributed
            assert general.failed_writes == fast.failed_writes
        general.close()
        if crash:
            kept, fast._journal = fast._journal, None
            if kept is not None and fast.path is not None:
                kept.abandon()  # the process died: its journal file stays, as written
                step_journal.recover_file(kept.path, fast.path.parent)
            return compare_bytes(general, fast, index=False)
        fast.close()
        fast.put_repeat(last[1] if last else records[-1], now + 1, step + 1, 0.1, 1)  # closed: counted, never raised
    compare_bytes(general, fast)


def compare_bytes(general: RankFileWriter, fast: RankFileWriter, index: bool = True) -> None:
    if general.path is None or fast.path is None:
        assert general.path is None or general.path.stat().st_size == 0
        return
    assert fast.path.read_bytes() == general.path.read_bytes()
    if not index:
        return
    idx_a, idx_b = step_index.index_path(general.path), step_index.index_path(fast.path)
    assert idx_a.exists() == idx_b.exists()
    if idx_a.exists():
        assert idx_a.read_bytes() == idx_b.read_bytes()


def test_steady_cpu_steps_are_repeats_and_rebuild_to_their_own_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the hook, a CPU run's steady steps take the fast path; every line rebuilds to a record
    with its own step, time and step time, the rest equal to the repeated record's."""
    monkeypatch.setenv("MEMTOP_TENSORBOARD", "0")
    calls: list[int] = []
    put_repeat = RankFileWriter.put_repeat

    def count(self: RankFileWriter, last: dict[str, Any], time: float, step: int, step_time: float | None, used: int | None) -> None:
        calls.append(step)
        put_repeat(self, last, time, step, step_time, used)

    monkeypatch.setattr(RankFileWriter, "put_repeat", count)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 16)
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        prof.session.sampling.overhead_budget = 1e-12  # measure only at the first steps and on signals
        for _ in range(40):
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        run_dir = prof.run_dir
    assert len(calls) >= 20, calls
    docs = [dict(r.doc) for r in load_run(run_dir).steps(0) if isinstance(r, StepRecord)]
    assert [d["step"] for d in docs] == list(range(1, 41))
    own = ("time", "step", "step_time", "device_used")
    for prev, d in zip(docs, docs[1:], strict=False):
        assert d["time"] > prev["time"]
        assert d["step_time"] == pytest.approx(d["time"] - prev["time"], abs=1e-6)
        assert type(d["device_used"]) is int and d["device_used"] > 0
        if d["step"] in calls and prev["step"] in calls:  # both repeats of the same record
            assert {k: v for k, v in d.items() if k not in own} == {k: v for k, v in prev.items() if k not in own}
