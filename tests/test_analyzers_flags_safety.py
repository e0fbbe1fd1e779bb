"""memtop starts exactly one user process, the training command; reading a run never executes anything.

Each script here counts its own executions in a file. The ``--help`` probe (a last resort for a
parser the source cannot spell) is bounded in time and dies with memtop, however memtop ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from clikit import memtop
from conftest import memtop_cmd, only_run, run_memtop
from runfactory import make_run

from memtop.analyzers.flags import detect_flags, live_probes
from memtop.runs.rundir import update_meta

COUNT = 'import os, pathlib; _p = pathlib.Path(__file__).with_name("executions.log"); _p.write_text((_p.read_text() if _p.exists() else "") + f"{os.getpid()}\\n")\n'


def _executions(d: Path) -> int:
    log = d / "executions.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _wait_for_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


PLAIN_TRAINING = textwrap.dedent(
    """
    import sys
    import torch
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(int(sys.argv[1])):  # no parser: the arguments are read by hand
        model(torch.randn(8, 64)).sum().backward()
        opt.step()
        opt.zero_grad()
    """
)


def test_train_runs_a_script_without_a_parser_once_and_analyze_never(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text(COUNT + PLAIN_TRAINING)
    runs = tmp_path / "runs"
    out = run_memtop("train", "--no-tui", "--runs-dir", str(runs), "plain.py", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert _executions(tmp_path) == 1  # the training itself, and nothing else
    run = only_run(runs)
    assert json.loads((run / "meta.json").read_text())["detected_flags"] == []
    for verb in (["analyze", str(run)], ["analyze", "--json", str(run)], ["compare", str(run), str(run)], ["export", str(run), "--csv", str(tmp_path / "x.csv")], ["runs"]):
        proc = memtop(*verb, "--runs-dir", str(runs), cwd=tmp_path) if verb == ["runs"] else memtop(*verb, cwd=tmp_path)
        assert proc.returncode == 0, (verb, proc.stderr)
    assert _executions(tmp_path) == 1


def test_train_stores_statically_read_flags_without_a_second_run(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(COUNT + "import argparse\np = argparse.ArgumentParser()\np.add_argument('--batch_size', type=int, default=4)\nprint(p.parse_args())\n")
    runs = tmp_path / "runs"
    out = run_memtop("train", "--no-tui", "--runs-dir", str(runs), "train.py", "--batch_size=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    flags = json.loads((only_run(runs) / "meta.json").read_text())["detected_flags"]
    assert [(f["flag"], f["value"], f["syntax"]) for f in flags] == [("--batch_size", "2", "equals")]
    assert _executions(tmp_path) == 1


@pytest.mark.parametrize("keep_cwd", [True, False])
def test_reading_a_run_directory_executes_nothing_in_it(tmp_path: Path, keep_cwd: bool) -> None:
    run = make_run(tmp_path / "runs", command=["./python", "train.py", "--batch-size", "8"])
    for name in ("python", "train.py"):
        path = run / name
        path.write_text("#!/bin/sh\ntouch \"$(dirname \"$0\")/EXECUTED\"\n")
        path.chmod(0o755)
    meta = json.loads((run / "meta.json").read_text())
    if keep_cwd:
        update_meta(run, cwd=str(run), detected_flags=[])
    else:
        meta.pop("cwd")
        (run / "meta.json").write_text(json.dumps(meta))
    for verb in (["analyze", str(run)], ["analyze", "--json", str(run)], ["compare", str(run), str(run)], ["export", str(run), "--csv", str(tmp_path / "x.csv")]):
        proc = memtop(*verb, cwd=run)
        assert proc.returncode == 0, (verb, proc.stderr)
        assert not (run / "EXECUTED").exists(), verb


DYNAMIC = textwrap.dedent(
    """
    import argparse, os, sys, time
    p = argparse.ArgumentParser()
    for name in ("lr", "wd"):
        p.add_argument(f"--{name}", type=float, default=0.1)  # names computed at run time: a probe may run
    if os.environ.get("HANG_IN_PROBE") and os.environ.get("MEMTOP_DISABLE") == "1":
        open("probe.pid", "w").write(str(os.getpid()))
        time.sleep(600)
    args = p.parse_args()
    open("past_parse_args", "w").write("the probe let the script run on")
    """
)


def test_probe_reads_a_dynamic_parser_and_stops_at_parse_args(tmp_path: Path) -> None:
    (tmp_path / "dyn.py").write_text(COUNT + DYNAMIC)
    flags = {e.flag: e for e in detect_flags(["python", "dyn.py", "--lr", "0.5"], tmp_path)}
    assert flags["--lr"].value == "0.5" and flags["--wd"].value == "0.1" and flags["--wd"].kind == "float"
    assert not (tmp_path / "past_parse_args").exists()
    assert not (tmp_path / "__pycache__").exists()
    assert _executions(tmp_path) == 1  # the probe, which stopped at parse_args


def test_probe_is_bounded_and_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dyn.py").write_text(DYNAMIC)
    monkeypatch.setenv("HANG_IN_PROBE", "1")
    assert detect_flags(["python", "dyn.py"], tmp_path, timeout=1.0) == []
    pid = int((tmp_path / "probe.pid").read_text())
    assert _gone(pid)
    assert live_probes() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL])
def test_probe_dies_with_memtop_train(tmp_path: Path, sig: int) -> None:
    """SIGTERM/SIGINT/SIGHUP: memtop ends the probe's group; SIGKILL: the probe's own watchdog sees memtop gone."""
    (tmp_path / "dyn.py").write_text(DYNAMIC + "open('train.pid', 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTOP_")}
    env["HANG_IN_PROBE"] = "1"
    proc = subprocess.Popen([*memtop_cmd("train", "--no-tui", "--runs-dir", str(tmp_path / "runs"), "dyn.py")], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    train_pid = None
    try:
        probe_pid = int(_wait_for_file(tmp_path / "probe.pid"))
        train_pid = int(_wait_for_file(tmp_path / "train.pid"))
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        assert _gone(probe_pid), "the --help probe outlived memtop"
    finally:
        for pid in (proc.pid, train_pid):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        proc.wait(timeout=10)

