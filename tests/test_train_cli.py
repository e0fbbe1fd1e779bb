"""`memtop train` end to end: the real CLI, a real child process, real files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SCRIPTS, memtop_cmd, only_run, read_records, run_memtop

from memtop.runs.reader import load_run

TINY = str(SCRIPTS / "tiny_train.py")
EVERY = {"MEMTOP_ACTIVATIONS": "every"}


def steps_of(run_dir: Path, rank: int = 0) -> list[dict[str, Any]]:
    return [r for r in read_records(run_dir, rank) if r["type"] == "step"]


def test_zero_code_and_explicit_give_the_same_figures(tmp_path: Path) -> None:
    a = run_memtop("train", "--no-tui", "--runs-dir", str(tmp_path / "a"), "--", sys.executable, TINY, "--steps", "4", env=EVERY)
    assert a.returncode == 0, a.stderr
    b = subprocess.run(
        [sys.executable, TINY, "--steps", "4", "--explicit", "--runs-dir", str(tmp_path / "b")],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, **EVERY},
    )
    assert b.returncode == 0, b.stderr
    zero, explicit = steps_of(only_run(tmp_path / "a")), steps_of(only_run(tmp_path / "b"))
    assert [r["step"] for r in zero] == [r["step"] for r in explicit] == [1, 2, 3, 4]
    for rz, re_ in zip(zero, explicit, strict=True):
        assert rz["moments"] == re_["moments"]
        assert rz["categories"] == re_["categories"]
        assert [t["name"] for t in rz["large_tensors"]] == [t["name"] for t in re_["large_tensors"]]
    assert zero[-1]["categories"]["activations"] > 0 or zero[-1]["moments"]["forward_end"]["activations"] > 0


def test_run_directory_is_complete(tmp_path: Path) -> None:
    out = run_memtop("train", "--no-tui", "--runs-dir", str(tmp_path), "--name", "tiny", "--interval", "0.2", TINY, "--steps", "3")
    assert out.returncode == 0, out.stderr
    run = only_run(tmp_path)
    assert run.name.endswith("-tiny")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["schema"] == 2 and meta["exit_code"] == 0 and meta["status"] == "finished"
    assert meta["command"] == [sys.executable, TINY, "--steps", "3"]
    assert meta["ended_at"] >= meta["started_at"]
    assert meta["devices"] and meta["torch_version"]
    assert "step 3 loss" in (run / "output.log").read_text()
    assert "step 3 loss" in out.stdout  # still shown while captured
    assert "[memtop] step" in out.stdout  # headless status line
    recs = read_records(run)
    assert [r["type"] for r in recs] == ["step", "step", "step", "exit"]
    for r in recs:
        assert r["schema"] == 2 and r["rank"] == 0 and isinstance(r["time"], float)
    assert recs[1]["step_time"] > 0 and recs[0]["step_time"] is None
    # TensorBoard events with the spec's tags, read by TensorBoard's own reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard" / "rank0"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert "TensorProfiling/Tensor_Category/parameters_MB" in tags
    assert "TensorProfiling/Large_Tensors/count" in tags
    assert "TensorProfiling/peak_MB" not in tags  # null on CPU: not written
    assert [e.step for e in acc.Scalars("TensorProfiling/Tensor_Category/parameters_MB")] == [1, 2, 3]


def test_max_steps_ends_the_run_cleanly(tmp_path: Path) -> None:
    out = run_memtop("train", "--no-tui", "--runs-dir", str(tmp_path), "--max-steps", "2", TINY, "--steps", "50")
    assert out.returncode == 0, out.stderr
    run = only_run(tmp_path)
    recs = read_records(run)
    assert [r["step"] for r in recs if r["type"] == "step"] == [1, 2]
    assert recs[-1]["type"] == "exit" and recs[-1]["reason"] == "max_steps"
    assert "step 3 loss" not in (run / "output.log").read_text()


def test_cpu_out_of_memory_is_recorded(tmp_path: Path) -> None:
    out = run_memtop("train", "--no-tui", "--runs-dir", str(tmp_path), TINY, "--steps", "5", "--oom")
    assert out.returncode == 1
    run = only_run(tmp_path)
    oom = [r for r in read_records(run) if r["type"] == "oom"]
    assert len(oom) == 1
    assert oom[0]["requested_bytes"] == 1 << 50
    assert oom[0]["categories"]["parameters"] > 0 and oom[0]["step"] == 2
    assert json.loads((run / "meta.json").read_text())["status"] == "oom"
    assert "Traceback" not in out.stderr.split("memtop:")[-1]


def test_script_failing_at_import_leaves_a_valid_run(tmp_path: Path) -> None:
    out = run_memtop("train", "--no-tui", "--runs-dir", str(tmp_path), TINY, "--fail-at-import")
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("memtop: ") and "before any step" in last and "output.log" in last
    run = only_run(tmp_path)
    data = load_run(run)
    assert data.meta is not None and data.meta.status == "failed" and data.meta.exit_code == 1
    assert "fails at import on purpose" in (run / "output.log").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--", "no-such-command-xyz"], "command not found: no-such-command-xyz"),
        (["missing_script.py"], "script not found: missing_script.py"),
        (["--max-steps", "0", TINY], "--max-steps"),
        (["--max-steps", "lots", TINY], "--max-steps"),
        (["--interval", "-1", TINY], "--interval"),
        ([], "no command to run"),
    ],
    ids=["missing-command", "missing-script", "max-steps-0", "max-steps-garbage", "bad-interval", "no-command"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    out = run_memtop("train", "--no-tui", "--runs-dir", str(tmp_path / "runs"), *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memtop: ") and needle in lines[0], out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unwritable_runs_dir(tmp_path: Path) -> None:
    target = tmp_path / "file-not-dir"
    target.write_text("x")
    out = run_memtop("train", "--no-tui", "--runs-dir", str(target / "runs"), TINY)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "cannot create runs directory" in out.stderr


def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_signal_ends_the_whole_child_group_and_keeps_the_run(tmp_path: Path, sig: int) -> None:
    proc = subprocess.Popen(
        memtop_cmd("train", "--no-tui", "--runs-dir", str(tmp_path), TINY, "--steps", "100000", "--sleep", "0.05"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: any(tmp_path.glob("*/rank0.jsonl")) and len(steps_of(only_run(tmp_path))) >= 2)
        run = only_run(tmp_path)
        child_pid = json.loads((run / "meta.json").read_text())["pid"]
        assert child_pid == proc.pid
        proc.send_signal(sig)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + sig or (sig == signal.SIGINT and code in (1, 130)), (code, proc.stderr.read() if proc.stderr else "")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["ended_at"] is not None
    recs = read_records(run)
    assert recs[-1]["type"] == "exit"  # the child wrote its last record on the way out
    child = recs[-1]["pid"]
    assert not _pid_alive(child)


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(), reason="torchrun missing")
def test_torchrun_every_rank_writes_its_own_file(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = run_memtop(
        "train", "--no-tui", "--runs-dir", str(tmp_path), "--",
        torchrun, "--standalone", "--nproc-per-node", "2", str(SCRIPTS / "ddp_train.py"),
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run = only_run(tmp_path)
    for rank in (0, 1):
        steps = steps_of(run, rank)
        assert [r["step"] for r in steps] == [1, 2, 3, 4]
        assert all(r["rank"] == rank for r in steps)
        assert any(t["name"].startswith("model.module.") for t in steps[-1]["large_tensors"]) or steps[-1]["categories"]["parameters"] > 0
    # rank 1 runs twice the batch: more activations
    a0 = steps_of(run, 0)[-1]["moments"]["forward_end"]["activations"]
    a1 = steps_of(run, 1)[-1]["moments"]["forward_end"]["activations"]
    assert a1 > a0
    assert not (run / "rank2.jsonl").exists()  # the torchrun launcher itself writes nothing
