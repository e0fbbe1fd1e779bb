"""End to end in a real terminal: `memtop train` on a sample run inside tmux, read like a person would.

Drives the installed CLI in a tmux pane (send-keys, capture-pane), checks what is on the screen,
quits with `q` (and confirms), and checks that no process of the run is left. Skipped where tmux
is missing (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "runs" / "20231114-221320-gaussian_splat"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Tmux:
    """One private tmux server (its own socket) with one session, so tests never touch the user's tmux."""

    def __init__(self, name: str) -> None:
        self.socket = f"memtop-test-{os.getpid()}-{name}"
        self.session = name

    def run(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check, timeout=30)
        return out.stdout

    def start(self, command: str, cwd: Path, size: tuple[int, int], env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # No inherited COLUMNS/LINES: the app must size itself from the terminal.
        shell = f"cd {shlex.quote(str(cwd))} && unset COLUMNS LINES && export {exports} && {command}; echo MEMTOP-EXIT=$?; sleep 30"
        self.run("new-session", "-d", "-s", self.session, "-x", str(size[0]), "-y", str(size[1]), shell)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session, check=False)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; the screen was:\n{screen}")

    def kill(self) -> None:
        self.run("kill-server", check=False)


@pytest.fixture
def tmux(request: pytest.FixtureRequest) -> Iterator[Tmux]:
    t = Tmux(request.node.name.replace("[", "-").replace("]", ""))
    yield t
    t.kill()


def _env() -> dict[str, str]:
    return {
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        # `python` in the commands typed into tmux must be this interpreter (CI does not activate the venv)
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "TEXTUAL_ANIMATIONS": "none",
    }


def _processes_of(run_dir: Path) -> list[psutil.Process]:
    """Processes launched for this run (the hook's environment names the run directory)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            continue
        if env.get("MEMTOP_RUN_DIR") and Path(env["MEMTOP_RUN_DIR"]).resolve() == run_dir.resolve():
            found.append(proc)
    return found


def test_memtop_train_dashboard_in_tmux(tmux: Tmux, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    memtop = f"{shlex.quote(sys.executable)} -m memtop"
    script = "sample_runs/transformer_finetune.py"
    if not (REPO / script).exists():
        pytest.skip(f"{script} is not in this checkout")
    tmux.start(
        f"{memtop} train --runs-dir {shlex.quote(str(runs))} --name e2e -- python {script} --steps 100000 --log-every 1",
        cwd=REPO,
        size=(120, 40),
        env=_env(),
    )
    # First paint: the header says memtop and the run is going (before any step: WAITING).
    tmux.wait_for(lambda s: "memtop" in s and ("WAITING" in s or "RUNNING" in s), 20, "the dashboard")
    expected = (
        "RUNNING",
        "step ",
        "python sample_runs/transformer_finetune.py --steps 100000",  # the command
        "Device · cpu",  # which device
        "RSS",  # what a CPU has
        "n/a on CPU",  # and what it has not, said instead of zeros
        "activations",
        "Timeline · MiB per step",  # the plot is up
        "Large tensors",
        "Suggestions",
        "q Quit",
    )
    # Wait for the whole picture (a capture may catch a frame half drawn), then say what is missing.
    try:
        tmux.wait_for(lambda s: all(e in s for e in expected), 120, "the first steps")
    except AssertionError:
        screen = tmux.screen()
        missing = [e for e in expected if e not in screen]
        raise AssertionError(f"not on the screen: {missing}\n{screen}") from None
    (run_dir,) = list(runs.iterdir())
    tmux.wait_for(lambda s: "loss" in s, 60, "the child's output in the log panel")
    assert _processes_of(run_dir), "the training process should be running"

    tmux.keys("q")
    tmux.wait_for(lambda s: "still going" in s, 10, "the quit confirmation")
    tmux.keys("n")
    tmux.wait_for(lambda s: "still going" not in s and "RUNNING" in s, 10, "the dashboard again")
    tmux.keys("q")
    tmux.wait_for(lambda s: "still going" in s, 10, "the quit confirmation")
    tmux.keys("y")
    screen = tmux.wait_for(lambda s: "MEMTOP-EXIT=" in s, 30, "memtop to exit")
    assert "was interrupted" in screen, screen
    # The terminal was given back (no alternate screen left over) and the exit code is the child's.
    code = int(screen.split("MEMTOP-EXIT=")[1].split()[0])
    assert code in (130, 143, 137, 1, 2), screen
    # Nothing of the run is left running.
    deadline = time.monotonic() + 10
    while _processes_of(run_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_of(run_dir), "a process of the run survived memtop"
    # And the run directory is valid and says how it ended.
    import json

    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["ended_at"] is not None
    assert (run_dir / "rank0.jsonl").stat().st_size > 0


def test_memtop_watch_a_finished_run_in_tmux(tmux: Tmux, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(FIXTURE, runs / FIXTURE.name)
    memtop = f"{shlex.quote(sys.executable)} -m memtop"
    tmux.start(f"{memtop} watch latest --runs-dir {shlex.quote(str(runs))}", cwd=tmp_path, size=(80, 24), env=_env())
    expected = ("FINISHED", "step 60", "Run finished: exited 0", "$ python gaussian_splat.py --steps", "n/a on CPU",
                "Timeline · MiB per step", "Suggestions", "q Quit")
    try:
        tmux.wait_for(lambda s: all(e in s for e in expected), 30, "the dashboard")
    except AssertionError:
        screen = tmux.screen()
        missing = [e for e in expected if e not in screen]
        raise AssertionError(f"not on the screen: {missing}\n{screen}") from None
    tmux.keys("q")  # a finished run: no question
    screen = tmux.wait_for(lambda s: "MEMTOP-EXIT=" in s, 15, "memtop to exit")
    assert "MEMTOP-EXIT=0" in screen
