"""The step journal (memtop train's writer): the same bytes, and a crash still loses at most the step in flight.

Under ``memtop train`` a repeated step record is stored in a shared-memory journal and written
with its batch (:mod:`memtop.profiler.step_journal`). Checked here with real records and real
processes: a journaled writer's file is byte for byte the file of a writer that writes every
record at once (the general path), closed or killed and recovered as the launcher recovers it;
a training killed with SIGKILL from outside keeps every step it finished once the launcher has
recovered its journal (and lacks some before: the journal was in use); a journal that is damaged,
replaced by something else or points outside the run is never trusted (fuzzed).
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hookkit import read_lines, steps_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_profiler_repeat_line import _op, compare_paths

from memtop.launcher import child_environment
from memtop.profiler import step_journal
from memtop.profiler.writers import RankFileWriter

_no_tear = _op.filter(lambda op: op[0] != "tear")  # a journaled repeat is not written at once: it cannot tear alone


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_no_tear, min_size=1, max_size=40))
def test_a_journaled_writer_writes_the_general_paths_bytes(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]) -> None:
    compare_paths(tmp_path_factory, ops, journal=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_no_tear, min_size=1, max_size=40))
def test_a_killed_writers_journal_recovers_the_general_paths_bytes(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]) -> None:
    compare_paths(tmp_path_factory, ops, journal=True, crash=True)


def journaled_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RankFileWriter, dict[str, Any]]:
    """A writer with a journal in ``tmp_path`` (as under memtop train), a real step record written full."""
    from test_profiler_repeat_line import real_records

    records = real_records(tmp_path / "real")
    monkeypatch.setenv(step_journal.ENV_DIR, str(tmp_path))
    (tmp_path / "run").mkdir()
    writer = RankFileWriter(tmp_path / "run", 0)
    rec = dict(records[-1])
    writer.put(rec)
    assert writer.path is not None
    return writer, rec


def test_repeats_wait_in_the_journal_and_go_before_any_other_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer, rec = journaled_writer(tmp_path, monkeypatch)
    assert writer.path is not None
    size = writer.path.stat().st_size
    for i in range(5):
        writer.put_repeat(rec, 1.7e9 + 0.01 * i, rec["step"] + 1 + i, 0.01, 1000 + i)
    assert writer.path.stat().st_size == size  # in the journal, not the file
    writer.write_now({"type": "warning", "message": "x"})
    lines = read_lines(writer.path)
    assert [r.get("step") for r in lines] == [rec["step"], *range(rec["step"] + 1, rec["step"] + 6), None]
    assert lines[-1]["type"] == "warning"
    writer.put_repeat(rec, 1.8e9, 99, 0.5, None)  # the warning came between: a repeat of rec is written in full again
    writer.close()
    assert not list(tmp_path.glob("*.journal"))  # closed: written and removed


KILLED = """
import torch
import memtop

model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(16, 32)
step = 0
while True:
    model(x).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    step += 1
    print(f"done {step}", flush=True)
"""


def test_sigkill_from_outside_keeps_every_finished_step_once_the_journal_is_recovered(tmp_path: Path) -> None:
    """The OOM killer's way, under memtop train's writer: killed at a moment of its choosing."""
    run_dir, journals, project = tmp_path / "run", tmp_path / "journals", tmp_path / "proj"
    journals.mkdir()
    project.mkdir()
    (project / "train.py").write_text(KILLED)
    env = child_environment(run_dir, None, journal_dir=journals)
    env.pop("RANK", None)
    child = subprocess.Popen([sys.executable, "train.py"], cwd=project, env=env, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    seen = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            seen = int(line.split()[1])
            if seen == 300:
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(timeout=60)
    before = steps_of(read_lines(run_dir / "rank0.jsonl"))
    assert len(list(journals.glob("*.journal"))) == 1
    recovered = step_journal.recover(journals, run_dir)
    steps = steps_of(read_lines(run_dir / "rank0.jsonl"))  # every line whole, valid JSON
    assert steps[:seen] == list(range(1, seen + 1))
    assert steps == list(range(1, len(steps) + 1))  # nothing lost in between, nothing twice
    assert recovered > 0 and len(before) < seen, (recovered, len(before))  # the journal held steps the file lacked
    assert not list(journals.iterdir())  # recovered: removed


# holds a journal with one step in its batch, as a training between two flushes does
HOLDER = """
import sys, time
from pathlib import Path
from memtop.profiler import step_journal
journal = step_journal.StepJournal.open(Path(sys.argv[1]))
assert journal is not None and journal.begin(tuple(sys.argv[3].split("|")), Path(sys.argv[2]), int(sys.argv[4]), 1.7e9)
journal.add(1.7e9, 2, 0.01, 5)
print(journal.path, flush=True)
time.sleep(120)
"""

# holds the POSIX lock of a file (a launcher's lock file, a journal), as a live process does
LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def _start(code: str, *args: object) -> tuple[subprocess.Popen[str], str]:
    """A live process running ``code`` (with memtop importable), and the first line it prints."""
    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _aged(path: Path) -> Path:
    """Made long ago (a sweep leaves alone a lock file or journal made in the last seconds: its
    maker may not have locked it yet)."""
    os.utime(path, (1e9, 1e9))
    return path


def _record(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "meta.json").write_text("{}")
    record = run / "rank0.jsonl"
    record.write_bytes(b'{"type":"step","step":1}\n')
    return record


def test_a_journal_of_a_live_process_is_left_alone_and_written_once_it_dies(tmp_path: Path) -> None:
    """Liveness is the journal's lock, held by its process until it ends however it ends."""
    journals = tmp_path / "journals"
    journals.mkdir()
    record = _record(tmp_path)
    holder, path = _start(HOLDER, journals, record, PIECES.replace("\x00", "|"), record.stat().st_size)
    try:
        assert path.endswith(f"{holder.pid}-0.journal")
        assert step_journal.recover(journals, record.parent) == 0  # its process runs: not read
        assert step_journal.recover_file(Path(path), None) == 0
        assert Path(path).exists()
    finally:
        holder.kill()
        holder.wait()
    assert step_journal.recover(journals, record.parent) == 1  # dead (SIGKILL): its lock went with it
    assert steps_of(read_lines(record)) == [1, 2]
    assert not list(journals.iterdir())


def test_a_pid_in_a_name_decides_nothing(tmp_path: Path) -> None:
    """A journal named with a live pid (the dead writer's pid taken by another process) is still
    written; a launcher's directory named with a pid that does not exist here (another pid
    namespace sharing /dev/shm) is left while its launcher holds its lock."""
    record = _record(tmp_path)
    journals = tmp_path / "journals"
    journals.mkdir()
    (journals / f"{os.getpid()}-0.journal").write_bytes(_journal_bytes(record, record.stat().st_size, 2))
    (journals / f"{1 << 70}-0.journal").write_bytes(b"x")  # a pid no kernel has: nothing to trip on
    _aged(journals / f"{1 << 70}-0.journal")
    assert step_journal.recover(journals, record.parent) == 2
    assert steps_of(read_lines(record)) == [1, 2, 3]
    shm = tmp_path / "shm"
    shm.mkdir()
    other = shm / f"memtop-{1 << 22}-0"  # above any pid_max: its launcher lives in another namespace
    other.mkdir()
    journal = other / f"{1 << 22}-0.journal"
    journal.write_bytes(_journal_bytes(record, record.stat().st_size, 1))
    locker, _ = _start(LOCKER, other / step_journal.LOCK_NAME)
    try:
        made = step_journal.make_dir(shm)
        assert made is not None
        assert journal.exists() and steps_of(read_lines(record)) == [1, 2, 3]  # left alone
        step_journal.remove_dir(made, tmp_path)
    finally:
        locker.kill()
        locker.wait()
    _aged(other / step_journal.LOCK_NAME)
    made = step_journal.make_dir(shm)  # its launcher gone: swept now
    assert made is not None
    assert not other.exists()
    step_journal.remove_dir(made, tmp_path)
    assert not list(shm.iterdir())


def test_a_journal_of_another_run_is_written_into_that_run(tmp_path: Path) -> None:
    """A process of this run that wrote records into another run's directory: at the end, its
    journal's lines go to that run's rank file, never dropped (nor into this run)."""
    other, this = _record(tmp_path / "y"), _record(tmp_path / "x")
    journals = tmp_path / "journals"
    journals.mkdir()
    (journals / "5-0.journal").write_bytes(_journal_bytes(other, other.stat().st_size, 2))
    assert step_journal.recover(journals, this.parent) == 2
    assert steps_of(read_lines(other)) == [1, 2, 3]
    assert steps_of(read_lines(this)) == [1]
    assert not list(journals.iterdir())


def test_a_journal_that_cannot_be_opened_now_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of descriptors (or any other failure to open it): the journal may be a live process's,
    so it stays; a symlink where a journal goes is dropped."""
    record = _record(tmp_path)
    journals = tmp_path / "journals"
    journals.mkdir()
    journal = journals / "5-0.journal"
    journal.write_bytes(_journal_bytes(record, record.stat().st_size, 1))
    os.symlink(record, journals / "6-0.journal")
    monkeypatch.setattr(step_journal, "_open_lock_file", lambda path, create=False: None)
    assert step_journal.recover(journals, record.parent) == 0
    assert sorted(p.name for p in journals.iterdir()) == ["5-0.journal"]
    monkeypatch.undo()
    assert step_journal.recover(journals, record.parent) == 1


def test_a_damaged_journal_never_stops_a_launcher(tmp_path: Path) -> None:
    """What a dead process or a stray write left in a journal: recovery says nothing, writes
    nothing, removes it; the next run starts."""
    record = _record(tmp_path)
    shm = tmp_path / "shm"
    shm.mkdir()
    stale = shm / "memtop-1-0"
    stale.mkdir()
    (stale / step_journal.LOCK_NAME).write_bytes(b"")  # nobody holds it: a dead launcher's
    _aged(stale / step_journal.LOCK_NAME)
    nul = _journal_bytes(record, 0, 2)
    nul[32 + 3] = 0  # a NUL in the record's path
    (stale / "1-0.journal").write_bytes(nul)
    deep = '{"type":"step","x":' + "[" * 3000 + "\x00" * 4 + "}"  # (fits a header; too deep for json)
    (stale / "2-0.journal").write_bytes(_journal_bytes(record, record.stat().st_size, 1, pieces=deep))
    (stale / f"{1 << 70}-0.journal").write_bytes(_journal_bytes(record, record.stat().st_size, 1))
    before = record.read_bytes()
    made = step_journal.make_dir(shm)
    assert made is not None
    assert not stale.exists()
    assert record.read_bytes() == before + b"".join(step_journal._parse(bytes(_journal_bytes(record, len(before), 1)))[2])  # type: ignore[index]
    step_journal.remove_dir(made, tmp_path)


PIECES = '{"type":"step","schema":2,"base":1,"rank":0,"time":\x00,"step":\x00,"step_time":\x00,"device_used":\x00}'


def _journal_bytes(record: Path, offset: int, entries: int, batch: int = 1, pieces: str = PIECES) -> bytearray:
    path_b, text = os.fsencode(record), pieces.encode()
    data = bytearray(step_journal.SIZE)
    struct.pack_into("<4sIqqII", data, 0, step_journal.MAGIC, step_journal.VERSION, batch, offset, len(path_b), len(text))
    data[32 : 32 + len(path_b) + len(text)] = path_b + text
    for i in range(entries):
        struct.pack_into("=qdqdq", data, step_journal.HEADER + 40 * i, batch, 1.7e9 + i, i + 2, 0.01, 5)
    return data


def test_recovery_appends_only_what_the_file_lacks(tmp_path: Path) -> None:
    record = tmp_path / "rank0.jsonl"
    record.write_bytes(b'{"type":"step","step":1}\n')
    offset = record.stat().st_size
    journal = tmp_path / "1-0.journal"
    journal.write_bytes(_journal_bytes(record, offset, 3))
    found = step_journal.read(journal)
    assert found is not None
    lines = found[2]
    assert len(lines) == 3
    with record.open("ab") as fh:
        fh.write(lines[0] + lines[1][:10])  # one line and part of the next landed before the crash
    assert step_journal.recover_file(journal, tmp_path) == 2
    assert steps_of(read_lines(record)) == [1, 2, 3, 4]
    journal.write_bytes(_journal_bytes(record, offset, 3))
    assert step_journal.recover_file(journal, tmp_path) == 0  # all there: nothing twice


def test_damaged_or_foreign_journals_are_never_trusted(tmp_path: Path) -> None:
    """Fuzzed: a journal is read after its process died and may hold anything. Never an
    exception, never a write outside the run, never a line that is not a repeat's."""
    run, outside = tmp_path / "run", tmp_path / "outside.jsonl"
    run.mkdir()
    record = run / "rank0.jsonl"
    rng = random.Random(0)
    for trial in range(400):
        record.write_bytes(b'{"type":"step","step":1}\n')
        outside.write_bytes(b"")
        target = outside if trial % 5 == 0 else record
        data = _journal_bytes(target, record.stat().st_size, rng.randrange(0, 6), batch=rng.randrange(1, 3))
        for _ in range(rng.randrange(0, 6)):
            at = rng.randrange(0, 40 + step_journal.HEADER + 40 * 6) if rng.random() < 0.8 else rng.randrange(len(data))
            data[at] = rng.randrange(256)
        if rng.random() < 0.1:
            data = data[: rng.randrange(len(data))]
        journal = tmp_path / "2-0.journal"
        journal.write_bytes(bytes(data))
        step_journal.recover_file(journal, run)
        assert outside.read_bytes() == b""
        steps = steps_of(read_lines(record))  # every line whole, valid JSON
        assert len(steps) == len(set(steps))  # none twice
    os.symlink(record, tmp_path / "3-0.journal")
    assert step_journal.recover_file(tmp_path / "3-0.journal", run) == 0  # a link is not read
    (tmp_path / "4-0.journal").mkdir()
    assert step_journal.recover(tmp_path, run) == 0


SELF_KILL = """
import os, signal
from pathlib import Path
import torch

model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(16, 32)
for step in range(1, 10_000):
    model(x).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    if step == 400:
        from memtop.profiler import step_journal  # what the journal holds that the file lacks, right before the kill
        held = [step_journal.read(p) for p in Path(os.environ[step_journal.ENV_DIR]).glob("*.journal")]
        print("journal holds", sum(len(h[2]) for h in held if h is not None), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_memtop_train_recovers_a_killed_trainings_journal(tmp_path: Path) -> None:
    """The real CLI: the training dies of SIGKILL between two batches; memtop writes what its
    journal held before it reads the run, and leaves no journal directory behind."""
    from conftest import REPO, memtop_cmd, read_records

    script = tmp_path / "train.py"
    script.write_text(SELF_KILL)
    env = {k: v for k, v in os.environ.items() if k not in ("MEMTOP_RUN_DIR", step_journal.ENV_DIR)}
    argv = memtop_cmd("train", "--no-tui", "--runs-dir", str(tmp_path / "runs"), "--", sys.executable, str(script))
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    steps = [r["step"] for r in read_records(run_dir) if r["type"] == "step"]
    assert steps == list(range(1, 401)), (len(steps), err[-2000:])
    assert "killed" in out + err
    held = [line for line in out.splitlines() if line.startswith("journal holds")]
    assert held and int(held[0].split()[-1]) > 0, out[-2000:]  # recovered: the file lacked them when the training died
    assert not list(Path("/dev/shm").glob(f"memtop-{proc.pid}-*"))  # its journal directory removed


def test_a_batch_no_step_comes_to_write_is_written_by_the_flusher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training stops stepping (an evaluation, a checkpoint): its last steps reach the file anyway."""
    import time

    writer, rec = journaled_writer(tmp_path, monkeypatch)
    now = time.time()
    for i in range(3):
        writer.put_repeat(rec, now + 0.001 * i, rec["step"] + 1 + i, 0.001, 1000)
    assert writer.path is not None
    assert len(read_lines(writer.path)) == 1
    deadline = time.monotonic() + 10
    while len(read_lines(writer.path)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert steps_of(read_lines(writer.path)) == [rec["step"] + i for i in range(4)]
    writer.close()


def test_a_launcher_sweeps_the_directories_of_dead_launchers(tmp_path: Path) -> None:
    """A killed memtop leaves its journal directory: the next one writes what its journals hold
    into their runs' rank files (only such files), then removes it; a live launcher's is left, and
    so is a journal whose process outlived its launcher."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "meta.json").write_text("{}")
    record = run / "rank0.jsonl"
    record.write_bytes(b'{"type":"step","step":1}\n')
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "memtop-7-0").mkdir()  # a killed memtop's, empty, its lock file unheld
    (shm / "memtop-7-0" / step_journal.LOCK_NAME).write_bytes(b"")
    _aged(shm / "memtop-7-0" / step_journal.LOCK_NAME)
    old = shm / "memtop-7-1"  # one killed between making its directory and its lock file, long ago
    old.mkdir()
    os.utime(old, (1e9, 1e9))
    (shm / "memtop-7-2").mkdir()  # one being made now: no lock file yet
    stale = shm / "memtop-8-0"
    stale.mkdir()
    (stale / step_journal.LOCK_NAME).write_bytes(b"")
    _aged(stale / step_journal.LOCK_NAME)
    (stale / "9-0.journal").write_bytes(_journal_bytes(record, record.stat().st_size, 2))
    elsewhere = tmp_path / "not-a-run.jsonl"
    elsewhere.write_bytes(b"")
    (stale / "9-1.journal").write_bytes(_journal_bytes(elsewhere, 0, 2))  # not a run's rank file
    outlived = shm / "memtop-8-1"  # a dead launcher's whose training still runs (it holds its journal's lock)
    outlived.mkdir()
    (outlived / step_journal.LOCK_NAME).write_bytes(b"")
    _aged(outlived / step_journal.LOCK_NAME)
    (outlived / "10-0.journal").write_bytes(_journal_bytes(record, 0, 2))
    live = shm / "memtop-11-0"  # a live launcher's (it holds its lock file's lock)
    live.mkdir()
    lockers = [_start(LOCKER, outlived / "10-0.journal")[0], _start(LOCKER, live / step_journal.LOCK_NAME)[0]]
    try:
        made = step_journal.make_dir(shm)
        assert made is not None and made.is_dir()
        assert sorted(p.name for p in shm.iterdir()) == sorted(["memtop-7-2", "memtop-8-1", "memtop-11-0", made.name])
        assert sorted(p.name for p in outlived.iterdir()) == sorted(["10-0.journal", step_journal.LOCK_NAME])
        assert steps_of(read_lines(record)) == [1, 2, 3]
        assert elsewhere.read_bytes() == b""
        step_journal.remove_dir(made, tmp_path)
    finally:
        for locker in lockers:
            locker.kill()
            locker.wait()


def test_a_batch_cut_short_by_a_full_disk_costs_its_lines_and_nothing_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's write stops mid-line (a disk filling up): its lines count as failed (those that
    landed whole stay readable), the next line starts a fresh one, every other line is whole."""
    from test_profiler_repeat_line import _Tear

    from memtop.runs.reader import read_file

    tear = _Tear()
    monkeypatch.setattr("memtop.profiler.writers.os.write", tear)
    writer, rec = journaled_writer(tmp_path, monkeypatch)
    first = rec["step"]
    for i in (1, 2):
        writer.put_repeat(rec, 1.7e9 + 0.01 * i, first + i, 0.01, 1000)
    tear.armed = 1  # the batch's write (3 lines): a line and a half, then ENOSPC
    writer.put_repeat(rec, 1.7e9 + 1.0, first + 3, 0.01, 1000)  # a second later: the batch is due
    assert writer.failed_writes == 3
    for i in (4, 5, 6):
        writer.put_repeat(rec, 1.7e9 + 1.0 + 0.01 * i, first + i, 0.01, 1000)
    writer.close()
    assert writer.path is not None
    recs, skipped, error = read_file(writer.path)
    assert error is None and sum(skipped.values()) == 1  # the torn line only
    assert [r.as_json()["step"] for r in recs] == [first, first + 1, first + 4, first + 5, first + 6]


@pytest.mark.parametrize("where", ["formatting", "checking the file", "before the write", "after the write"])
def test_a_flush_cut_short_loses_nothing_and_writes_nothing_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Ctrl-C (or a signal handler's exception) in the middle of writing a batch: the batch stays
    in the journal until it is in the file; the next flush writes what the file lacks of it."""
    writer, rec = journaled_writer(tmp_path, monkeypatch)
    first = rec["step"]
    for i in (1, 2, 3):
        writer.put_repeat(rec, 1.7e9 + 0.01 * i, first + i, 0.01, 1000)
    journal = writer._journal
    assert journal is not None
    # where the interrupt lands: the journal's formatting, its check of what the file holds, the
    # writer's write of the batch, or the journal's "written" after it
    owner, target = {
        "formatting": (step_journal.StepJournal, "lines"),
        "checking the file": (step_journal.StepJournal, "landed"),
        "before the write": (RankFileWriter, "_emit"),
        "after the write": (step_journal.StepJournal, "written"),
    }[where]
    real = getattr(owner, target)
    calls = [0]

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, target, interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer.write_now({"type": "warning", "message": "first try"})
    writer.write_now({"type": "warning", "message": "after"})  # the next write: the batch's rest first
    writer.close()
    assert writer.path is not None
    lines = read_lines(writer.path)
    assert steps_of(lines) == [first, first + 1, first + 2, first + 3]
    assert [r.get("message") for r in lines if r["type"] == "warning"] == ["after"]


def test_a_process_killed_before_its_batch_and_after_another_record_is_not_recovered_into_a_broken_line(tmp_path: Path) -> None:
    """The header names a batch, but the file holds another record where the batch goes (a signal
    handler wrote the exit record first): recovery writes nothing rather than half a line."""
    record = tmp_path / "rank0.jsonl"
    record.write_bytes(b'{"type":"step","step":1}\n')
    offset = record.stat().st_size
    with record.open("ab") as fh:
        fh.write(b'{"type":"exit","steps":1}\n')  # longer than nothing, shorter than the batch
    journal = tmp_path / "1-0.journal"
    journal.write_bytes(_journal_bytes(record, offset, 3))
    before = record.read_bytes()
    assert step_journal.recover_file(journal, tmp_path) == 0
    assert record.read_bytes() == before
