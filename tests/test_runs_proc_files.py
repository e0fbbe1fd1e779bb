"""Every reader sees ``proc<pid>.jsonl``: the records of a process of the run without a rank of its own.

A real run: the main process steps under the injected hook (``rank0.jsonl``) and a forked
``multiprocessing`` child steps too (``proc<pid>.jsonl``, docs/run-format.md). Analyze, runs,
export (CSV and TensorBoard), the dashboard's reader, the headless status line, the TensorBoard
follower, `memtop train`'s end-of-run check and the GPU validation's checker all see its records,
and show them as "process <pid>", never as a made-up rank.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from clikit import memtop
from hookkit import read_lines, run_hooked, steps_of

from memtop.analyzers.load import load_for_analysis
from memtop.commands.train import _records_contain
from memtop.headless import StatusLine
from memtop.runs.decode import decode_line
from memtop.runs.reader import load_run
from memtop.runs.recordfiles import PROC_KEY, count_label, file_key, file_label, file_stem, record_files, short_label
from memtop.runs.records import RunMeta, StepRecord
from memtop.tui.reader import FileRunReader
from memtop.validation.checks import check_run

FORK_CHILD = """
import multiprocessing as mp
import torch


def train(steps, model=None):
    model = model or torch.nn.Linear(16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model(torch.randn(4, 16)).sum().backward()
        opt.step()
        opt.zero_grad()
    return opt


if __name__ == "__main__":
    model = torch.nn.Linear(16, 16)
    opt = train(4, model)
    child = mp.get_context("fork").Process(target=train, args=(3,))
    child.start()
    child.join()
    print("child", child.pid, child.exitcode, flush=True)
    for _ in range(2):
        model(torch.randn(4, 16)).sum().backward()
        opt.step()
        opt.zero_grad()
"""


@pytest.fixture(scope="module")
def proc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A run directory holding the main process's rank0.jsonl and the child's proc<pid>.jsonl."""
    base = tmp_path_factory.mktemp("procrun")
    run_dir = base / "runs" / "20261201-000000-fork_child"
    proc = run_hooked(FORK_CHILD, base / "proj", run_dir)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("child "))
    pid, code = (int(v) for v in line.split()[1:])
    assert code == 0
    assert sorted(p.name for p in run_dir.glob("*.jsonl")) == sorted(["rank0.jsonl", f"proc{pid}.jsonl"])
    return run_dir, pid


def test_record_file_names_and_keys() -> None:
    assert file_key("rank0.jsonl") == 0 and file_key("rank17.jsonl") == 17
    assert file_key("proc1234.jsonl") == PROC_KEY + 1234
    assert file_key("proc1234-2.jsonl") == 2 * PROC_KEY + 1234
    for odd in ("proc.jsonl", "procx.jsonl", "proc12-1.jsonl", "proc12-10.jsonl", "proc12-.jsonl", "rank1234567890.jsonl", "rank-1.jsonl", "proc1.json", "meta.json"):
        assert file_key(odd) is None, odd
    for name in ("rank3.jsonl", "proc1234.jsonl", "proc1234-2.jsonl"):
        key = file_key(name)
        assert key is not None and file_stem(key) + ".jsonl" == name  # the key names its file back
    assert [file_label(k) for k in (3, PROC_KEY + 1234, 2 * PROC_KEY + 1234)] == ["rank 3", "process 1234", "process 1234 (2)"]
    assert [short_label(k) for k in (3, PROC_KEY + 1234)] == ["3", "pid 1234"]
    assert count_label([0, 1]) == "2 ranks" and count_label([0, PROC_KEY + 5, PROC_KEY + 6]) == "1 rank + 2 processes"


def test_ranks_sort_before_processes(tmp_path: Path) -> None:
    for name in ("proc99.jsonl", "rank10.jsonl", "proc5-2.jsonl", "rank2.jsonl", "proc7.jsonl", "output.log"):
        (tmp_path / name).write_text("")
    assert [p.name for p in record_files(tmp_path).values()] == ["rank2.jsonl", "rank10.jsonl", "proc7.jsonl", "proc99.jsonl", "proc5-2.jsonl"]


def test_load_run_reads_the_child_file_typed_with_zero_skips(proc_run: tuple[Path, int]) -> None:
    run_dir, pid = proc_run
    data = load_run(run_dir)
    assert data.bad_lines == 0 and not data.skipped, data.warnings
    assert list(data.records) == [0, PROC_KEY + pid]
    assert [r.step for r in data.steps(0)] == steps_of(read_lines(run_dir / "rank0.jsonl")) == [1, 2, 3, 4, 5, 6]
    assert [r.step for r in data.steps(PROC_KEY + pid)] == [1, 2, 3]
    # the current hook's newer keys are typed, and equal the JSON written
    for key in data.records:
        for rec in data.steps(key):
            assert rec.highwater is not None and rec.measured_step is not None and rec.peak_point is not None
            assert rec.highwater._asdict() == rec.doc["highwater"] and rec.measured_step == rec.doc["measured_step"]
            assert rec.highwater.parameters == rec.categories.parameters  # nothing frees parameters within a step
    run, series = load_for_analysis(run_dir)
    assert sorted(series) == [0, PROC_KEY + pid] and series[PROC_KEY + pid].steps == [1, 2, 3]


def test_analyze_and_runs_show_the_process(proc_run: tuple[Path, int]) -> None:
    run_dir, pid = proc_run
    text = memtop("analyze", str(run_dir), "--no-plot")
    assert text.returncode == 0, text.stderr
    assert f"process {pid}, steps 1–3" in text.stdout and "1 rank + 1 process" in text.stdout
    assert f"rank {PROC_KEY + pid}" not in text.stdout
    js = memtop("analyze", str(run_dir), "--json")
    assert js.returncode == 0, js.stderr
    report = json.loads(js.stdout)
    assert report["run"]["ranks"] == [0, PROC_KEY + pid]
    assert {t["rank"]: t["steps"] for t in report["timeline"]} == {0: 6, PROC_KEY + pid: 3}
    assert report["ranks"]["message"].startswith((f"process {pid} ", "rank 0 "))
    listed = memtop("runs", "--runs-dir", str(run_dir.parent))
    assert listed.returncode == 0 and run_dir.name in listed.stdout, listed.stderr


def test_export_writes_the_process_rows_and_events(proc_run: tuple[Path, int], tmp_path: Path) -> None:
    run_dir, pid = proc_run
    out = memtop("export", str(run_dir), "--csv", "-")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert [(r["file"], r["step"]) for r in rows] == [("rank0", str(s)) for s in range(1, 7)] + [(f"proc{pid}", str(s)) for s in (1, 2, 3)]
    assert {r["rank"] for r in rows} == {"0"}  # the child inherited rank 0: its records say so
    tb = memtop("export", str(run_dir), "--tensorboard", str(tmp_path / "tb"))
    assert tb.returncode == 0, tb.stderr
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == sorted(["rank0", f"proc{pid}"])


def test_live_readers_follow_the_process(proc_run: tuple[Path, int], tmp_path: Path) -> None:
    src, pid = proc_run
    run_dir = tmp_path / src.name
    shutil.copytree(src, run_dir)
    snap = FileRunReader(run_dir, suggest=None).poll(final=True)
    assert [(r.rank, r.last.step if r.last else None) for r in snap.ranks] == [(0, 6), (PROC_KEY + pid, 3)]
    line = StatusLine(run_dir).line(final=True)
    assert f"process {pid}" in line and "step 6" in line and "step 3" in line
    from memtop.runs.tensorboard import RunFollower

    follower = RunFollower(run_dir)
    assert follower.poll(final=True) == 9
    follower.stop()
    assert (run_dir / "tensorboard" / f"proc{pid}").is_dir()


def test_end_of_run_check_and_gpu_checker_read_the_process(proc_run: tuple[Path, int], tmp_path: Path) -> None:
    src, pid = proc_run
    run_dir = tmp_path / src.name
    shutil.copytree(src, run_dir)
    assert not _records_contain(run_dir, b'"type":"oom"')
    oom = {"type": "oom", "schema": 1, "rank": 0, "time": 1.0, "message": "out of memory", "step": 4, "device": "cpu"}
    assert not isinstance(decode_line(json.dumps(oom)), type(None))
    with (run_dir / f"proc{pid}.jsonl").open("a") as fh:
        fh.write(json.dumps(oom, separators=(",", ":")) + "\n")
    assert _records_contain(run_dir, b'"type":"oom"')  # only the child's file holds it
    checked = check_run(run_dir)
    assert checked.steps == 9  # 6 of rank 0 + 3 of the child (a CPU run: the CUDA identities fail, as they should)
    assert not any("not JSON" in v for v in checked.violations)
    assert isinstance(next(r for r in load_run(run_dir).steps(PROC_KEY + pid)), StepRecord)


def test_gpu_checker_reports_every_line_the_decoder_skips(tmp_path: Path) -> None:
    """Routed through the decoder, the checker still cannot have a bad record hidden from it:
    a line the decoder refuses (a negative byte count) is a violation naming the reason."""
    from runfactory import step_record

    from memtop.runs.rundir import write_meta
    from memtop.validation.checks import read_meta

    run_dir = tmp_path / "20261201-000000-x"
    run_dir.mkdir()
    bad = step_record(2)
    bad["categories"]["activations"] = -1
    lines = [json.dumps(step_record(1)), json.dumps(bad), json.dumps(step_record(3))]
    (run_dir / "rank0.jsonl").write_text("\n".join(lines) + "\n")
    checked = check_run(run_dir, expect_steps=3)
    assert checked.steps == 2
    assert any("1 lines are not JSON objects or not valid records" in v and "wrong type or out of range" in v for v in checked.violations), checked.violations
    assert any("not 1..2" in v for v in checked.violations)  # the refused step leaves a gap
    assert read_meta(run_dir) == RunMeta()  # no meta.json
    write_meta(run_dir, {"schema": 1, "run_id": run_dir.name, "command": ["python", "t.py"], "status": "finished", "exit_code": 0})
    meta = read_meta(run_dir)
    assert meta.run_id == run_dir.name and meta.exit_code == 0 and meta.status == "finished"
    (run_dir / "meta.json").write_text("{not json")
    assert read_meta(run_dir) == RunMeta()


def test_the_end_of_run_check_reads_in_pieces_and_finds_a_record_across_a_piece_boundary(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    needle = b'"type":"oom"'
    for cut in (1, 5, len(needle) - 1):  # the record type split over the 1 MiB boundary at each place
        pad = b"x" * ((1 << 20) - cut)
        (run_dir / "rank0.jsonl").write_bytes(pad + needle + b"\n")
        assert _records_contain(run_dir, needle)
    (run_dir / "rank0.jsonl").write_bytes(b"x" * (3 << 20))
    assert not _records_contain(run_dir, needle)
