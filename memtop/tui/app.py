"""The live dashboard: one screen that says where the memory is and what to change.

The app never touches files. A :class:`~memtop.tui.poller.Poller` thread polls a
:class:`~memtop.tui.reader.RunReader` (and the child, if ``memtop train`` launched one) and posts
immutable snapshots; the app shows the newest one unless the display is paused.

Ending the run: ``q`` asks first while the child runs; Ctrl-C (a key inside Textual), SIGTERM,
SIGHUP and SIGINT to memtop end the child's process group at once. Either way the app leaves only
after ``child.terminate()`` returned, so the launcher can finalize the run directory. Under
``memtop train`` the signals are watched outside the app (``end_requested``), so that a stuck
event loop cannot keep the run from ending.

A bug in the dashboard must not end the training: an exception in the app while the child runs
becomes :class:`DashboardFailed` (one line for the user, the traceback for the bug report) and
``memtop train`` goes on with headless status lines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widgets import Footer, Static

from memtop.child import ChildController
from memtop.supervise import RunEnder, SignalWatch
from memtop.tui.fmt import signal_name
from memtop.tui.poller import Poller, ReaderFailed, SnapshotFetched
from memtop.tui.reader import FileRunReader, RunReader
from memtop.tui.screens import ConfirmQuit, HelpScreen
from memtop.tui.snapshot import RankSnapshot, RunSnapshot
from memtop.tui.widgets.advice import AdvicePanel
from memtop.tui.widgets.breakdown import CategoryBar
from memtop.tui.widgets.fragmentation import FragPanel
from memtop.tui.widgets.gauge import DeviceGauge
from memtop.tui.widgets.header import EndBanner, RunHeader
from memtop.tui.widgets.logpanel import LogPanel
from memtop.tui.widgets.ranks import RankTable
from memtop.tui.widgets.tensors import TensorTable

if TYPE_CHECKING:
    from memtop.tui.widgets.timeline import Timeline

Clock = Callable[[], float]

# Below these sizes the layout tightens (80×24 must show every panel but the log).
NARROW_WIDTH = 110
SHORT_HEIGHT = 32

_END_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class DashboardFailed(Exception):
    """The dashboard died while the training runs: ``str()`` is one line, ``details`` the traceback.

    ``log_failure``: not a bug but a full disk; the dashboard left so that the output can be shown.
    """

    def __init__(self, message: str, details: str, log_failure: bool = False) -> None:
        super().__init__(message)
        self.details = details
        self.log_failure = log_failure


class DashboardApp(App[int | None]):
    """The ``memtop train`` / ``memtop watch`` screen. Returns the child's exit code, if it had one."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "memtop"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        Binding("q", "request_quit", "Quit"),
        Binding("p", "toggle_pause", "Pause"),
        Binding("l", "toggle_log", "Log"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+c", "interrupt", "End run", show=False, priority=True),
        Binding("ctrl+q", "request_quit", show=False, priority=True),
    ]

    paused: reactive[bool] = reactive(False)
    log_visible: reactive[bool] = reactive(True)
    selected_rank: reactive[int] = reactive(0)

    def __init__(
        self,
        reader: RunReader,
        *,
        child: ChildController | None = None,
        refresh: float = 0.5,
        clock: Clock = time.time,
        handle_signals: bool = False,
        plot_interval: float = 5.0,
        paint_interval: float | None = None,
        end_requested: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__()
        self._end_requested = end_requested
        self.crash: BaseException | None = None
        self.crash_details = ""
        self.log_failure: str | None = None  # why the dashboard stepped aside for status lines
        self._reader = reader
        self._child = child
        self._refresh = refresh
        self._clock = clock
        self._handle_signals = handle_signals
        self._plot_interval = plot_interval
        # The run is read every `refresh` s (so an ending is seen at once); routine figures repaint at
        # most once a second: at 50 steps/s, painting every read would cost the dashboard's whole
        # CPU budget (measured in benchmarks/dashboard_cpu.py).
        self._paint_interval = max(refresh, 1.0) if paint_interval is None else paint_interval
        self._paint_timer_pending = False
        self._timeline: Timeline | None = None
        self._timeline_scheduled = False
        self._poller: Poller | None = None
        self._latest: RunSnapshot | None = None
        self._shown: RunSnapshot | None = None
        self._log_choice: bool | None = None
        self._ending_run = False
        self._ended_by: str | None = None
        self._installed_signals: list[int] = []
        self.snapshots_applied = 0
        self._applied_at = 0.0
        self.reader_error: str | None = None

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield EndBanner(id="banner")
        yield RankTable(id="ranks")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield DeviceGauge(id="gauge")
                yield CategoryBar(id="breakdown")
                frag = FragPanel(id="frag")
                frag.border_title = "Fragmentation"
                yield frag
                yield AdvicePanel(id="advice")
            with Vertical(id="right"):
                # The plot (textual-plotext) is mounted just after the first frame: importing and
                # building it is a sixth of the time to first paint, and nobody reads a plot first.
                slot = Static("", id="timeline")
                slot.border_title = "Timeline"
                yield slot
                yield TensorTable(id="tensors")
                yield LogPanel(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#ranks", RankTable).display = False
        self.query_one("#banner", EndBanner).display = False
        self.query_one("#advice", AdvicePanel).border_title = "Suggestions"
        self._update_size_classes(self.size.width, self.size.height)
        self._poller = Poller(self._reader, self.post_message, interval=self._refresh, child=self._child)
        self._poller.start()
        self.set_interval(1.0, self._tick)
        if self._end_requested is not None:
            self.set_interval(0.2, self._check_end_request)
        if self._handle_signals:
            self._install_signal_handlers()

    def on_unmount(self) -> None:
        self._remove_signal_handlers()
        if self._poller is not None:
            self._poller.cancel()
            self._poller.join(timeout=2.0)

    def on_resize(self, event: events.Resize) -> None:
        self._update_size_classes(event.size.width, event.size.height)

    def _update_size_classes(self, width: int, height: int) -> None:
        narrow, short = width < NARROW_WIDTH, height < SHORT_HEIGHT
        self.set_class(narrow, "-narrow")
        self.set_class(short, "-short")
        compact = narrow or short
        self.query_one("#gauge", DeviceGauge).compact = short
        self.query_one("#breakdown", CategoryBar).compact = compact
        self.query_one("#advice", AdvicePanel).compact = short
        self.query_one("#tensors", TensorTable).narrow = narrow
        if self._log_choice is None:
            self.log_visible = not short

    def watch_log_visible(self, visible: bool) -> None:
        self.set_class(not visible, "-no-log")

    def watch_paused(self, paused: bool) -> None:
        if not paused and self._latest is not None:
            self._apply(self._latest)
        else:
            self._update_header()

    def watch_selected_rank(self) -> None:
        if self._shown is not None:
            self._apply(self._shown)

    # -- snapshots -----------------------------------------------------------------------------------

    def on_snapshot_fetched(self, message: SnapshotFetched) -> None:
        if self._poller is not None:
            self._poller.ack()
        self._latest = message.snapshot
        if self.reader_error is not None:
            self.reader_error = None
        if self.paused:
            self._update_header()
            return
        wait = self._paint_interval - (time.monotonic() - self._applied_at)
        if wait <= 0 or self._urgent(message.snapshot):
            self._apply(message.snapshot)
        elif not self._paint_timer_pending:
            self._paint_timer_pending = True
            self.set_timer(wait, self._paint_latest)

    def _urgent(self, snap: RunSnapshot) -> bool:
        """Changes a person must see at once, not at the next paint: the run ended, a rank appeared."""
        shown = self._shown
        if shown is None:
            return True
        return (
            snap.live != shown.live
            or len(snap.ranks) != len(shown.ranks)
            or snap.suggestions.state != shown.suggestions.state
            or snap.behind != shown.behind
        )

    def _paint_latest(self) -> None:
        self._paint_timer_pending = False
        if self._latest is not None and not self.paused and self._latest is not self._shown:
            self._apply(self._latest)

    def on_reader_failed(self, message: ReaderFailed) -> None:
        self.reader_error = message.error
        self.notify(f"reading the run failed: {message.error}", severity="error", timeout=8)

    def on_rank_table_chosen(self, message: RankTable.Chosen) -> None:
        self.selected_rank = message.rank

    def _apply(self, snap: RunSnapshot) -> None:
        rank = snap.rank(self.selected_rank)
        ending = snap.ending()
        with self.batch_update():
            self._shown = snap
            self._update_header()
            banner = self.query_one("#banner", EndBanner)
            banner.show(snap, ending)
            if self._ending_run and ending is None:
                banner.say(f"Ending the run ({self._ended_by}): SIGTERM to its process group, then SIGKILL…")
            ranks = self.query_one("#ranks", RankTable)
            ranks.display = len(snap.ranks) > 1
            if ranks.display:
                ranks.show(snap)
            self.query_one("#gauge", DeviceGauge).show(snap, rank)
            self.query_one("#breakdown", CategoryBar).show(rank)
            self.query_one("#frag", FragPanel).show(rank)
            self.query_one("#advice", AdvicePanel).show(snap.suggestions, snap.warnings, snap.command)
            self._show_timeline(rank, ending is not None)
            self.query_one("#tensors", TensorTable).show(rank)
            self.query_one("#log", LogPanel).show(snap)
        self.snapshots_applied += 1
        self._applied_at = time.monotonic()

    def _show_timeline(self, rank: RankSnapshot | None, final: bool) -> None:
        timeline = self._timeline
        if timeline is None:
            if not self._timeline_scheduled:
                self._timeline_scheduled = True
                self.set_timer(0.05, self._mount_timeline)
            return
        timeline.show(rank)
        if final:
            timeline.flush()

    async def _mount_timeline(self) -> None:
        from memtop.tui.widgets.timeline import Timeline

        if not self.is_running or self._timeline is not None:
            return
        for slot in self.query("#timeline"):
            await slot.remove()
        timeline = Timeline(id="timeline", min_interval=self._plot_interval)
        await self.query_one("#right").mount(timeline, before=self.query_one("#tensors"))
        self._timeline = timeline
        if self._shown is not None:
            shown = self._shown
            self._show_timeline(shown.rank(self.selected_rank), shown.ending() is not None)

    def _update_header(self) -> None:
        shown = self._shown if self._shown is not None else self._latest
        if shown is None:
            return
        try:
            header = self.query_one("#header", RunHeader)
        except NoMatches:  # the dashboard's widgets are being torn down (or not yet composed)
            return
        header.show(shown, now=self._clock(), paused=self.paused, rank=self.selected_rank)

    def _tick(self) -> None:
        """Keep the elapsed time moving while no data comes (a snapshot repaints the header anyway)."""
        if self._shown is not None and self._shown.live and time.monotonic() - self._applied_at > 0.9:
            self._update_header()

    def _check_end_request(self) -> None:
        """A signal to memtop, seen by ``memtop train``'s signal thread: end the run and leave.

        Also: the child's output can no longer be written to output.log (a full disk). The screen
        would go on showing a log frozen in the past while the output is thrown away, so the
        dashboard steps aside for status lines and the output goes to the terminal.
        """
        assert self._end_requested is not None
        why = self._end_requested()
        if why is not None and not self._ending_run:
            self.end_run_and_exit(why)
            return
        log_error = getattr(self._child, "log_error", None)
        if log_error and not self._ending_run and self.log_failure is None and self._child_running():
            self.log_failure = str(log_error)
            self.exit(None)

    def _handle_exception(self, error: Exception) -> None:
        """Keep the error for ``run_dashboard``; with a live child, print no traceback (it goes to a file)."""
        if self.crash is None:
            self.crash = error
            self.crash_details = "".join(traceback.format_exception(error))
        super()._handle_exception(error)
        if self._child is not None:
            self._exit_renderables.clear()

    # -- actions -----------------------------------------------------------------------------------

    def _child_running(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def _exit_code(self) -> int | None:
        return self._child.poll() if self._child is not None else None

    def action_request_quit(self) -> None:
        if self._ending_run:
            return
        if self._child_running():
            assert self._child is not None
            self.push_screen(ConfirmQuit(self._child.pid), self._on_quit_confirmed)
        else:
            self.exit(self._exit_code())

    async def action_quit(self) -> None:
        self.action_request_quit()

    def _on_quit_confirmed(self, end_it: bool | None) -> None:
        if end_it:
            self.end_run_and_exit("q")

    def action_interrupt(self) -> None:
        """Ctrl-C: like a confirmed quit (end the run, no question), as in a plain terminal."""
        if self._child_running():
            self.end_run_and_exit("ctrl+c")
        elif not self._ending_run:
            self.exit(self._exit_code())

    def end_run_and_exit(self, why: str) -> None:
        """End the child's process group (off the UI thread: it may wait out a grace period), then leave."""
        if self._ending_run:
            return
        self._ending_run = True
        self._ended_by = why
        while len(self.screen_stack) > 1:
            self.pop_screen()
        if self._shown is not None:
            self._apply(self._shown)
        self.run_worker(self._terminate_and_exit(), name="terminate-child", exclusive=True)

    async def _terminate_and_exit(self) -> None:
        child = self._child
        code: int | None = None
        if child is not None:
            code = await asyncio.to_thread(child.terminate)
        self.exit(code)

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.notify("display paused: the run goes on, data keeps being read" if self.paused else "display resumed", timeout=2)

    def action_toggle_log(self) -> None:
        self._log_choice = not self.log_visible
        self.log_visible = self._log_choice

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- signals to memtop itself ------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in _END_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, int(sig))
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            self._installed_signals.append(int(sig))

    def _remove_signal_handlers(self) -> None:
        if not self._installed_signals:
            return
        loop = asyncio.get_running_loop()
        for sig in self._installed_signals:
            loop.remove_signal_handler(sig)
        self._installed_signals.clear()

    def _on_signal(self, sig: int) -> None:
        if self._child_running():
            self.end_run_and_exit(signal_name(sig))
        elif not self._ending_run:
            self.exit(self._exit_code())


def run_dashboard(
    run_dir: Path,
    child: ChildController | None = None,
    refresh: float = 0.5,
    *,
    clock: Clock = time.time,
    reader: RunReader | None = None,
    end_requested: Callable[[], str | None] | None = None,
    headless: bool = False,
) -> int | None:
    """Show the dashboard for ``run_dir`` until the user quits; return the child's exit code if known.

    With ``child`` (``memtop train``): a confirmed ``q``, Ctrl-C, or ``end_requested()`` turning
    non-None (a signal to memtop) end the child's process group via ``child.terminate()``. Without
    ``end_requested`` the app handles SIGTERM, SIGHUP and SIGINT itself. If the app fails while
    the child runs, :class:`DashboardFailed` is raised and the child is left running: the caller
    shows the run another way. ``headless``: no terminal (tests).
    """
    # The terminal's real size, not an inherited COLUMNS/LINES (shutil.get_terminal_size prefers those,
    # and a shell or a parent process may have exported stale ones). The child's environment was
    # built before this point, so it is unaffected.
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
    watch: SignalWatch | None = None
    ender: RunEnder | None = None
    if end_requested is None and not headless and threading.current_thread() is threading.main_thread():
        # `memtop watch`: the same guarantee as `memtop train`, a lost terminal never leaves it hanging
        ender = RunEnder(lambda: None)
        ender.child = child
        watch = SignalWatch(ender.on_signal).start()
        end_requested = lambda: ender.reason if ender is not None else None  # noqa: E731
    app = DashboardApp(
        reader if reader is not None else FileRunReader(Path(run_dir)),
        child=child,
        refresh=refresh,
        clock=clock,
        handle_signals=end_requested is None,
        end_requested=end_requested,
    )
    try:
        result = app.run(mouse=True, headless=headless)
    except Exception as exc:
        if child is not None and child.poll() is None:
            raise DashboardFailed(_one_line(exc), traceback.format_exc()) from exc
        raise
    finally:
        if watch is not None and ender is not None:
            watch.stop()
            ender.main_done.set()
    if child is not None and child.poll() is None:
        if app.crash is not None:
            raise DashboardFailed(_one_line(app.crash), app.crash_details)
        if app.log_failure is not None:
            raise DashboardFailed(app.log_failure, "", log_failure=True)
        child.terminate()  # the app left without ending the run (it should not): no orphan
    if child is not None:
        code = child.poll()
        return code if code is not None else result
    return result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
