"""Issue 7, the supervisor's faults: a full disk, a closed stdin, a dead memtop, a signal during flag
detection. Each test drives the real `memtop train` in a subprocess on a real (tiny) child and
checks what a user would: the training's fate, memtop's exit, the run directory, stray processes.
See docs/reliability.md for the whole list.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MEMTOP_RUN_DIR", None)
    env.pop("MEMTOP_SUPERVISOR_PID", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _kill_tree(pid: int) -> None:
    """Test cleanup only: whatever a failing run left behind."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _only_run(runs: Path) -> Path:
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir


# -- 9. stdin ---------------------------------------------------------------------------------------


def test_stdin_reaches_the_child_headless(tmp_path: Path) -> None:
    script = _script(tmp_path, "echo_stdin.py", """
        import sys
        print("GOT:" + repr(sys.stdin.read()))
    """)
    proc = subprocess.run(
        [sys.executable, "-m", "memtop", "train", "--no-tui", "--runs-dir", str(tmp_path / "runs"), str(script)],
        input="hello\n", capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "GOT:'hello\\n'" in proc.stdout, proc.stdout


# -- 3. full disk -----------------------------------------------------------------------------------

_CHATTY = """
    import sys
    for i in range(4000):
        print(f"line {i:05d} " + "x" * 100)  # ~440 KB: far over the log's limit and a pipe's buffer
    print("DONE")
"""


def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    return preexec


def _run_train(tmp_path: Path, args: list[str], timeout: float, preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "memtop", "train", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(), cwd=tmp_path, preexec_fn=preexec, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(f"memtop train hung (killed after {timeout:.0f}s); stderr:\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_full_disk_mid_run_never_blocks_the_training(tmp_path: Path) -> None:
    """output.log hits the file-size limit (EFBIG, as ENOSPC would): the output keeps flowing."""
    runs = tmp_path / "runs"
    script = _script(tmp_path, "chatty.py", _CHATTY)
    proc = _run_train(tmp_path, ["--no-tui", "--runs-dir", str(runs), str(script)], timeout=90, preexec=_limit_file_size(64 * 1024))
    assert proc.returncode == 0, proc.stderr
    assert "DONE" in proc.stdout and "line 03999" in proc.stdout  # drained to the terminal after the log failed
    warnings = [line for line in proc.stderr.splitlines() if "cannot write" in line]
    assert len(warnings) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    run_dir = _only_run(runs)
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "finished"
    assert 0 < (run_dir / "output.log").stat().st_size <= 64 * 1024


def _tiny_tmpfs(path: Path) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (a real ENOSPC); skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    if not _tiny_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (not root); the RLIMIT_FSIZE test covers the same path")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_tmpfs_mid_run_never_blocks_the_training(tmp_path: Path, tiny_disk: Path) -> None:
    script = _script(tmp_path, "chatty.py", _CHATTY)
    proc = _run_train(tmp_path, ["--no-tui", "--runs-dir", str(tiny_disk), str(script)], timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "DONE" in proc.stdout
    assert [line for line in proc.stderr.splitlines() if "cannot write" in line], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_disk_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    script = _script(tmp_path, "never.py", "open('STARTED', 'w').close()\n")
    proc = _run_train(tmp_path, ["--no-tui", "--runs-dir", str(runs), str(script)], timeout=60, preexec=_limit_file_size(0))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memtop: cannot write to the runs directory"), proc.stderr
    assert list(runs.iterdir()) == []  # no half run directory, no .meta.json.PID.tmp
    assert not (tmp_path / "STARTED").exists()  # memtop refused to start an unprofiled run


# -- 6. memtop SIGKILLed ----------------------------------------------------------------------------


def test_a_killed_memtop_takes_its_training_and_workers_with_it(tmp_path: Path) -> None:
    """kill -9 memtop: the child, and a worker of the child (which PR_SET_PDEATHSIG cannot reach),
    end within seconds, and the run reads as `lost`, not `running`."""
    runs = tmp_path / "runs"
    pids = tmp_path / "pids"
    script = _script(tmp_path, "forever.py", f"""
        import argparse, subprocess, sys, time
        parser = argparse.ArgumentParser()  # a parser flag detection reads: no probe runs this script
        parser.add_argument("--steps", type=int, default=10)
        parser.parse_args()
        import torch  # the hook (and its watchdog) load with torch
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open({str(pids)!r}, "w") as fh:
            fh.write(f"{{worker.pid}}\\n")
        while True:
            time.sleep(0.1)
    """)
    memtop = subprocess.Popen(
        [sys.executable, "-m", "memtop", "train", "--no-tui", "--runs-dir", str(runs), str(script)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path,
    )
    worker = child = None
    try:
        assert _wait(lambda: pids.exists() and pids.read_text().endswith("\n"), 120), "the training never started its worker"
        worker = int(pids.read_text())
        child = psutil.Process(worker).ppid()
        assert psutil.Process(child).ppid() == memtop.pid and not _gone(child) and not _gone(worker)
        memtop.kill()
        memtop.wait()
        assert _wait(lambda: _gone(child), 10), "the training outlived a SIGKILLed memtop"
        assert _wait(lambda: _gone(worker), 10), "a worker of the training outlived a SIGKILLed memtop"
    finally:
        for pid in (worker, child, memtop.pid):
            if pid is not None:
                _kill_tree(pid)
    listed = subprocess.run([sys.executable, "-m", "memtop", "runs", "--json", "--runs-dir", str(runs)],
                            capture_output=True, text=True, timeout=60, env=_env())
    assert json.loads(listed.stdout)["runs"][0]["status"] == "lost"


def test_run_status_reads_lost_only_when_every_process_is_gone(tmp_path: Path) -> None:
    from memtop.runs.records import RunMeta
    from memtop.runs.status import run_status

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = os.uname().nodename
    assert run_status(tmp_path, RunMeta(status="running", host=here, pid=dead.pid, child_pid=dead.pid)) == "lost"
    assert run_status(tmp_path, RunMeta(status="running", host=here, pid=dead.pid, child_pid=os.getpid())) == "running"  # the training lives on
    assert run_status(tmp_path, RunMeta(status="running", host="another-host", pid=dead.pid)) == "running"  # cannot see other hosts
    assert run_status(tmp_path, RunMeta(status="finished", host=here, pid=dead.pid)) == "finished"
    assert run_status(tmp_path, RunMeta(status="running", host=here)) == "running"  # no pid to check
    assert run_status(tmp_path, RunMeta()) is None
    assert run_status(tmp_path) is None  # no meta.json


# -- the flag probe under a signal --------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_flag_detection_ends_the_probe(tmp_path: Path, sig: signal.Signals) -> None:
    """A script whose parser flag detection cannot read statically is probed with `--help`; this one
    loops forever when probed. memtop getting SIGTERM/SIGHUP must leave no probe behind."""
    runs = tmp_path / "runs"
    marker = tmp_path / "probe.pid"
    script = _script(tmp_path, "dynamic_flags.py", f"""
        import argparse, os, sys, time
        if "--help" in sys.argv:
            with open({str(marker)!r}, "w") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            while True:
                time.sleep(0.1)
        parser = argparse.ArgumentParser()  # built in the source, its flag spelled at run time: probed
        for flag in ["--batch" + "-size"]:
            parser.add_argument(flag, type=int, default=8)
        parser.parse_args()
        while True:
            time.sleep(0.1)
    """)
    memtop = subprocess.Popen(
        [sys.executable, "-m", "memtop", "train", "--no-tui", "--runs-dir", str(runs), str(script)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
    )
    probe = None
    try:
        if not _wait(lambda: marker.exists() and marker.read_text().endswith("\n"), 30):
            pytest.skip("flag detection did not probe this script (its parser was read statically)")
        probe = int(marker.read_text())
        memtop.send_signal(sig)
        memtop.wait(timeout=20)
        assert _wait(lambda: _gone(probe), 5), "the --help probe outlived memtop"
    finally:
        if memtop.poll() is None:
            _kill_tree(memtop.pid)
        if probe is not None:
            _kill_tree(probe)
    meta = json.loads((_only_run(runs) / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["ended_at"] is not None


def test_nohup_keeps_the_run_going_on_sighup(tmp_path: Path) -> None:
    """`nohup memtop train --no-tui …`: SIGHUP was ignored by the user's choice; memtop keeps it so."""
    runs = tmp_path / "runs"
    script = _script(tmp_path, "sleeper.py", "import time\nprint('up', flush=True)\ntime.sleep(600)\n")

    def ignore_hup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    memtop = subprocess.Popen(
        [sys.executable, "-m", "memtop", "train", "--no-tui", "--runs-dir", str(runs), str(script)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path,
        preexec_fn=ignore_hup,
    )
    try:
        assert _wait(lambda: runs.is_dir() and any("child_pid" in p.read_text() for p in runs.glob("*/meta.json")), 60)
        child = int(json.loads(next(runs.glob("*/meta.json")).read_text())["child_pid"])
        memtop.send_signal(signal.SIGHUP)
        os.killpg(child, signal.SIGHUP)  # as a closing terminal would send it
        time.sleep(1.0)  # a liveness window, not a speed figure: both must still be there
        assert memtop.poll() is None and not _gone(child)
        memtop.send_signal(signal.SIGTERM)
        assert memtop.wait(timeout=30) == 143
    finally:
        if memtop.poll() is None:
            _kill_tree(memtop.pid)
