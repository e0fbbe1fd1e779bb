"""Issue 7, the dashboard's faults: it must never take the training with it.

- keys that arrive while a modal screen closes (`?` then two quick keys) used to pop the dashboard
  itself (ScreenStackError) and end the child (rc 143);
- any exception in the app falls back to headless status lines, with one message, and the run
  goes on;
- a lost terminal (`tmux kill-session`) ends the child group and memtop within 10 s, with
  meta.json finalized (memtop used to hang in a futex wait, ignoring SIGTERM).

The terminal cases run the real CLI in a private tmux server (see tests/test_e2e_tmux.py).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from runfactory import make_run
from tuikit import FakeChild, run_app, wait_for_data

from memtop.tui.app import DashboardApp
from memtop.tui.reader import FileRunReader
from memtop.tui.screens import ConfirmQuit, HelpScreen

REPO = Path(__file__).resolve().parent.parent
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _app(run: Path, child: FakeChild) -> DashboardApp:
    return DashboardApp(FileRunReader(run, suggest=None), child=child, refresh=0.05, paint_interval=0.0)


@pytest.mark.parametrize("keys", [("a", "b"), ("question_mark", "question_mark"), ("escape", "q")])
def test_keys_while_the_help_closes_never_pop_the_dashboard(tmp_path: Path, keys: tuple[str, str]) -> None:
    run = make_run(tmp_path, steps=5, exit_code=None, status="running")
    child = FakeChild()
    app = _app(run, child)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        from textual import events

        for key in keys:  # both queued before the first one is handled: two quick keys
            help_screen.post_message(events.Key(key, None))
        await pilot.pause(0.3)
        assert app.is_running and len(app.screen_stack) == 1 and not isinstance(app.screen, HelpScreen)
        assert app.crash is None

    run_app(app, body)
    assert child.terminate_calls == 0 and child.code is None  # the training was never touched


def test_a_double_answer_to_the_quit_question_is_one_answer(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=5, exit_code=None, status="running")
    child = FakeChild()
    app = _app(run, child)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        await pilot.press("q")
        await pilot.pause()
        confirm = app.screen
        assert isinstance(confirm, ConfirmQuit)
        confirm.action_cancel()  # `n` twice, the second before the screen is gone
        confirm.action_cancel()
        await pilot.pause(0.3)
        assert app.is_running and len(app.screen_stack) == 1 and app.crash is None

    run_app(app, body)
    assert child.terminate_calls == 0


def test_a_dashboard_exception_leaves_the_child_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_dashboard with a real child: the app fails, the child is not ended, the caller is told."""
    from memtop.launcher import Child
    from memtop.tui.app import DashboardFailed, run_dashboard

    def boom(self: DashboardApp, snap: Any) -> None:
        raise RuntimeError("injected dashboard bug")

    monkeypatch.setattr(DashboardApp, "_apply", boom)
    run = make_run(tmp_path, steps=3, exit_code=None, status="running")
    child = Child([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), run / "output.log", echo=None)
    try:
        with pytest.raises(DashboardFailed) as failed:
            run_dashboard(run, child=child, refresh=0.05, headless=True)
        assert "RuntimeError: injected dashboard bug" in str(failed.value)
        assert "Traceback" in failed.value.details
        assert child.poll() is None, "the dashboard's failure ended the training"
    finally:
        child.terminate(grace=1.0)


# -- in a real terminal ---------------------------------------------------------------------------


class Tmux:
    def __init__(self, name: str) -> None:
        self.socket = f"memtop-rel-{os.getpid()}-{name}"
        self.session = name

    def run(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check, timeout=30).stdout

    def start(self, command: str, cwd: Path) -> None:
        env = {
            "TERM": "xterm-256color",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "TEXTUAL_ANIMATIONS": "none",
        }
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        shell = f"cd {shlex.quote(str(cwd))} && unset COLUMNS LINES MEMTOP_RUN_DIR && export {exports} && {command}; echo MEMTOP-EXIT=$?; sleep 60"
        self.run("new-session", "-d", "-s", self.session, "-x", "120", "-y", "40", shell)

    def screen(self, history: int = 200) -> str:
        return self.run("capture-pane", "-p", "-S", str(-history), "-t", self.session, check=False)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; the screen was:\n{screen}")

    def kill_server(self) -> None:
        self.run("kill-server", check=False)


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _meta_when_started(runs: Path, timeout: float = 30) -> tuple[Path, dict[str, Any]]:
    def started() -> bool:
        dirs = list(runs.glob("*/meta.json")) if runs.is_dir() else []
        return bool(dirs) and "child_pid" in json.loads(dirs[0].read_text())

    assert _wait(started, timeout), "memtop train never started the child"
    (meta_path,) = list(runs.glob("*/meta.json"))
    return meta_path.parent, json.loads(meta_path.read_text())


def _kill(*pids: int) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


@needs_tmux
@pytest.mark.e2e
def test_terminal_loss_ends_the_run_and_memtop_within_10s(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = tmp_path / "loop.py"
    script.write_text("import time\ni = 0\nwhile True:\n    print('tick', i, flush=True)\n    i += 1\n    time.sleep(0.05)\n")
    tmux = Tmux("hup")
    try:
        tmux.start(f"{shlex.quote(sys.executable)} -m memtop train --runs-dir {shlex.quote(str(runs))} {script.name}", tmp_path)
        tmux.wait_for(lambda s: "WAITING" in s or "RUNNING" in s, 60, "the dashboard")
        run_dir, meta = _meta_when_started(runs)
        memtop, child = int(meta["pid"]), int(meta["child_pid"])
        tmux.wait_for(lambda s: "tick" in s, 30, "the child's output")
        tmux.kill_server()  # the terminal is gone: SIGHUP to memtop
        try:
            assert _wait(lambda: _gone(child), 10), "the training outlived the terminal"
            assert _wait(lambda: _gone(memtop), 10), "memtop hangs after losing its terminal"
        finally:
            _kill(memtop, child)
        final = json.loads((run_dir / "meta.json").read_text())
        assert final["status"] == "interrupted" and final["ended_at"] is not None
    finally:
        tmux.kill_server()


@needs_tmux
@pytest.mark.e2e
def test_a_dashboard_exception_falls_back_to_status_lines(tmp_path: Path) -> None:
    """A bug in the dashboard (injected into the memtop process): one message, the run goes on
    headless and ends by itself with its own exit code."""
    runs = tmp_path / "runs"
    script = tmp_path / "ticks.py"
    script.write_text("import time\nfor i in range(60):\n    print('tick', i, flush=True)\n    time.sleep(0.1)\nprint('DONE')\n")
    launcher = tmp_path / "buggy_memtop.py"
    launcher.write_text(textwrap.dedent("""
        import sys
        import memtop.tui.app as app

        def _apply(self, snap):
            raise RuntimeError("injected dashboard bug")

        app.DashboardApp._apply = _apply
        from memtop.cli import main

        sys.exit(main(sys.argv[1:]))
    """))
    tmux = Tmux("uifail")
    try:
        tmux.start(f"{shlex.quote(sys.executable)} {launcher.name} train --runs-dir {shlex.quote(str(runs))} {script.name}", tmp_path)
        screen = tmux.wait_for(lambda s: "MEMTOP-EXIT=" in s, 90, "memtop to finish")
        assert "the dashboard failed (RuntimeError: injected dashboard bug); the run goes on with status lines" in screen, screen
        assert "DONE" in screen and "MEMTOP-EXIT=0" in screen, screen
        assert "Traceback" not in screen
        (run_dir,) = list(runs.iterdir())
        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta["status"] == "finished" and meta["exit_code"] == 0
        assert "injected dashboard bug" in (run_dir / "dashboard-error.log").read_text()
    finally:
        tmux.kill_server()


@needs_tmux
@pytest.mark.e2e
def test_terminal_loss_ends_memtop_watch(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    fixture = Path(__file__).resolve().parent / "fixtures" / "runs" / "20231114-221320-gaussian_splat"
    shutil.copytree(fixture, runs / fixture.name)
    pidfile = tmp_path / "watch.pid"
    tmux = Tmux("watchhup")
    try:
        tmux.start(f"sh -c 'echo $$ > {pidfile}; exec {shlex.quote(sys.executable)} -m memtop watch latest --runs-dir {shlex.quote(str(runs))}'", tmp_path)
        tmux.wait_for(lambda s: "FINISHED" in s, 60, "the dashboard")
        memtop = int(pidfile.read_text())
        tmux.kill_server()
        try:
            assert _wait(lambda: _gone(memtop), 10), "memtop watch hangs after losing its terminal"
        finally:
            _kill(memtop)
    finally:
        tmux.kill_server()


@needs_tmux
@pytest.mark.e2e
def test_a_full_disk_under_the_dashboard_shows_the_output_in_the_terminal(tmp_path: Path) -> None:
    """output.log stops growing (`ulimit -f`: EFBIG, as ENOSPC would): the dashboard steps aside
    with one warning, the training's output goes to the terminal, the run ends by itself."""
    runs = tmp_path / "runs"
    script = tmp_path / "chatty.py"
    script.write_text(
        "import time\n"
        "time.sleep(3)\n"  # the dashboard is up
        "for i in range(800):\n"  # ~90 KB: past the limit
        "    print(f'line {i:05d} ' + 'x' * 100, flush=True)\n"
        "time.sleep(4)\n"  # time to read the screen
        "print('DONE')\n"
    )
    tmux = Tmux("fulldisk")
    try:
        # 64 KiB of file per process (bash counts 1024-byte blocks); Python ignores SIGXFSZ: writes fail with EFBIG
        tmux.start(f"ulimit -f 64 && {shlex.quote(sys.executable)} -m memtop train --runs-dir {shlex.quote(str(runs))} {script.name}", tmp_path)
        tmux.wait_for(lambda s: "line 00799" in s, 120, "the output in the terminal")
        screen = tmux.screen(history=1500)
        assert screen.count("cannot write") == 1, screen
        (run_dir,) = list(runs.iterdir())
        kept = (run_dir / "output.log").read_text(errors="replace") + screen
        assert all(f"line {i:05d}" in kept for i in range(800)), "output was lost (neither in output.log nor on the terminal)"
        screen = tmux.wait_for(lambda s: "MEMTOP-EXIT=" in s, 60, "memtop to finish")
        assert "MEMTOP-EXIT=0" in screen and "DONE" in screen, screen
        assert "Traceback" not in screen
        assert json.loads((run_dir / "meta.json").read_text())["status"] == "finished"
    finally:
        tmux.kill_server()
