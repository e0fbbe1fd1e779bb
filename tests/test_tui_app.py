"""Pilot tests of the dashboard: keys, pause, quitting a live run, a child that ends, OOM, ranks, signals."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from runfactory import GiB, MiB, make_run, step_record
from textual.widgets import DataTable
from tuikit import FIXED_NOW, FakeChild, FakeReader, run_app, screen_text, wait_for_data, wait_until

from memtop.tui.app import DashboardApp
from memtop.tui.reader import FileRunReader
from memtop.tui.screens import ConfirmQuit, HelpScreen
from memtop.tui.snapshot import RunSnapshot
from memtop.tui.widgets.logpanel import LogPanel
from memtop.tui.widgets.ranks import RankTable
from memtop.tui.widgets.tensors import TensorTable


def _app(run: Path, child: FakeChild | None = None, **kw: Any) -> DashboardApp:
    return DashboardApp(FileRunReader(run, suggest=None), child=child, refresh=0.05, clock=lambda: FIXED_NOW, paint_interval=0.0, **kw)


def _append(path: Path, *records: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


def _live(tmp_path: Path, steps: int = 10, **kw: Any) -> Path:
    run = make_run(tmp_path, steps=steps, exit_code=None, status="running", **kw)
    (run / "output.log").write_text("epoch 1\nloss 2.0\n")
    return run


def test_first_screen_shows_the_run(tmp_path: Path) -> None:
    run = _live(tmp_path)
    app = _app(run, FakeChild())

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        text = screen_text(app)
        for expected in ("RUNNING", "step 10", "python train.py --batch-size 32", "NVIDIA H100 80GB HBM3",
                         "activations", "optimizer state", "Large tensors", "model.embed.weight", "Suggestions",
                         "loss 2.0", "Fragmentation", "q Quit"):
            assert expected in text, expected

    run_app(app, body, size=(140, 44))


def test_pause_holds_the_display_but_not_the_reading(tmp_path: Path) -> None:
    run = _live(tmp_path)
    app = _app(run, FakeChild())

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        await pilot.press("p")
        assert app.paused
        assert "PAUSED" in screen_text(app)
        _append(run / "rank0.jsonl", step_record(11), step_record(12))
        await wait_until(pilot, lambda: app._latest is not None and app._latest.last_step == 12, what="the reader")
        assert app._shown is not None and app._shown.last_step == 10
        assert "step 12" not in screen_text(app)
        await pilot.press("p")
        assert not app.paused
        await pilot.pause()
        assert "step 12" in screen_text(app) and "RUNNING" in screen_text(app)

    run_app(app, body)


def test_log_toggle_and_help(tmp_path: Path) -> None:
    run = _live(tmp_path)
    app = _app(run)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        # the log panel lives on the main screen: query that screen, and wait for each change
        # rather than assume one pause is enough on a loaded machine
        main = app.screen_stack[0]

        def log_shown() -> bool:
            return bool(main.query_one("#log", LogPanel).display)

        await wait_until(pilot, lambda: log_shown() and "loss 2.0" in screen_text(app), what="log with the child's output")
        await pilot.press("l")
        await wait_until(pilot, lambda: not log_shown(), what="log hidden")
        await pilot.press("l")
        await wait_until(pilot, log_shown, what="log shown again")
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help screen")
        assert "pause / resume the display" in screen_text(app)
        await pilot.press("x")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")

    run_app(app, body)


def test_quit_asks_before_ending_a_live_run(tmp_path: Path) -> None:
    run = _live(tmp_path)
    child = FakeChild()
    app = _app(run, child)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)
        assert "still going" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmQuit)
        assert child.terminate_calls == 0 and app.is_running
        await pilot.press("q")
        await pilot.pause()
        await pilot.click("#confirm-yes")  # the mouse works too
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")

    run_app(app, body)
    assert child.terminate_calls == 1
    assert app.return_value == 143


def test_ctrl_c_ends_the_run_without_asking(tmp_path: Path) -> None:
    run = _live(tmp_path)
    child = FakeChild()
    app = _app(run, child)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")

    run_app(app, body)
    assert child.terminate_calls == 1 and app.return_value == 143


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_to_memtop_ends_the_child(tmp_path: Path, sig: signal.Signals) -> None:
    run = _live(tmp_path)
    child = FakeChild()
    app = _app(run, child, handle_signals=True)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        assert int(sig) in app._installed_signals
        os.kill(os.getpid(), sig)
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")

    run_app(app, body)
    assert child.terminate_calls == 1 and app.return_value == 143
    assert app._installed_signals == []


def test_watch_mode_quits_at_once_and_never_ends_anything(tmp_path: Path) -> None:
    run = _live(tmp_path)
    app = _app(run)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")

    run_app(app, body)
    assert app.return_value is None


def test_child_that_exits_leaves_the_final_state_on_screen(tmp_path: Path) -> None:
    run = _live(tmp_path)
    child = FakeChild()
    app = _app(run, child)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        _append(run / "rank0.jsonl", step_record(11), {"type": "exit", "schema": 1, "rank": 0, "time": 1.0, "reason": "normal", "steps": 11})
        child.exit(0, "exited 0")
        await wait_until(pilot, lambda: app._shown is not None and not app._shown.live, what="the ending")
        await pilot.pause()
        text = screen_text(app)
        assert "FINISHED" in text and "Run finished: exited 0" in text and "step 11" in text
        assert app.is_running  # stays open on the final state
        await pilot.press("q")  # no question: nothing left to end
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")

    run_app(app, body, size=(140, 40))
    assert child.terminate_calls == 0 and app.return_value == 0


def test_child_that_dies_by_oom(tmp_path: Path) -> None:
    run = _live(tmp_path)
    child = FakeChild()
    app = _app(run, child)
    oom = {
        "type": "oom", "schema": 1, "rank": 0, "time": 1_700_000_010.0, "step": 11, "device": "cuda:0",
        "message": "CUDA out of memory. Tried to allocate 4.00 GiB", "requested_bytes": 4 * GiB,
        "categories": {"parameters": 2 * GiB, "gradients": 2 * GiB, "optimizer_state": 4 * GiB, "activations": 66 * GiB, "other": GiB},
        "allocated": 75 * GiB, "reserved": 78 * GiB, "device_free": 200 * MiB,
        "large_tensors": [{"name": "saved[BmmBackward0].self", "category": "activations", "bytes": 8 * GiB, "shape": [64, 32, 1024, 1024], "dtype": "torch.float32"}],
    }

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        _append(run / "rank0.jsonl", oom, {"type": "exit", "schema": 1, "rank": 0, "time": 1.0, "reason": "oom", "exception": "OutOfMemoryError", "steps": 10})
        child.exit(1, "exited 1")
        await wait_until(pilot, lambda: app._shown is not None and not app._shown.live, what="the ending")
        await pilot.pause()
        text = screen_text(app)
        assert "OOM" in text
        assert "OUT OF MEMORY" in text and "out of memory at step 11" in text and "4.00 GiB" in text
        assert "At OOM · step 11" in text
        assert "saved[BmmBackward0].self" in text and "at the OOM" in text
        assert "exited 1" in text

    run_app(app, body, size=(160, 44))
    assert child.terminate_calls == 0


def test_several_ranks_one_row_each_and_click_to_inspect(tmp_path: Path) -> None:
    def per_step(step: int, rank: int) -> dict[str, Any]:
        return {"activations": (4 + rank) * GiB}

    run = make_run(tmp_path, steps=8, ranks=4, per_step=per_step, exit_code=None, status="running")
    app = _app(run, FakeChild())

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        table = app.query_one("#ranks", RankTable)
        assert table.display and table.row_count == 4
        text = screen_text(app)
        for dev in ("cuda:0", "cuda:1", "cuda:2", "cuda:3"):
            assert dev in text
        assert "4 ranks" in text
        table.focus()
        await pilot.press("down", "down")
        await wait_until(pilot, lambda: app.selected_rank == 2, what="rank 2 to be selected")
        await pilot.pause()
        assert "Device · cuda:2" in screen_text(app)
        assert "6.00 GiB" in screen_text(app)  # rank 2's activations

    run_app(app, body, size=(160, 48))


def test_large_tensor_columns_fit_their_cells_as_soon_as_filled(tmp_path: Path) -> None:
    """Sized when the rows go in, not at the table's next idle: a modal pushed in between (the quit
    confirmation) drew the table behind it with header-wide columns (a fresh-clone CI snapshot)."""
    run = make_run(tmp_path, steps=8, ranks=4, exit_code=None, status="running")
    app = _app(run, FakeChild())

    def assert_fits(table: DataTable[Any], why: object) -> None:
        assert table.row_count > 0
        for key, column in table.columns.items():
            widest = max([column.label.cell_len, *(table.get_cell(row, key).cell_len for row in table.rows)])
            assert column.get_render_width(table) == widest + 2 * table.cell_padding, (why, key.value)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        tensors = app.query_one("#tensors", TensorTable)
        for narrow in (True, False):
            tensors.narrow = narrow
            tensors._shown = None
            tensors._fill()  # no await: no idle has run since the rows went in
            assert_fits(tensors, narrow)
        ranks = app.query_one("#ranks", RankTable)
        assert app._shown is not None
        ranks.clear(columns=True)
        ranks.on_mount()
        ranks._keys = []
        ranks.show(app._shown)  # the rows added anew
        assert_fits(ranks, "ranks added")
        ranks.show(app._shown)  # the cells updated
        assert_fits(ranks, "ranks updated")

    run_app(app, body, size=(160, 48))


def test_live_run_is_followed(tmp_path: Path) -> None:
    run = _live(tmp_path, steps=1)
    app = _app(run, FakeChild())
    stop = threading.Event()

    def writer() -> None:
        step = 2
        while not stop.is_set() and step <= 40:
            _append(run / "rank0.jsonl", step_record(step))
            with open(run / "output.log", "a") as fh:
                fh.write(f"step {step} done\n")
            step += 1
            time.sleep(0.01)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        t = threading.Thread(target=writer)
        t.start()
        try:
            await wait_until(pilot, lambda: app._shown is not None and app._shown.last_step == 40, what="step 40")
        finally:
            stop.set()
            t.join()
        await pilot.pause()
        text = screen_text(app)
        assert "step 40" in text and "step 40 done" in text

    run_app(app, body)


def test_cpu_run_says_what_it_cannot_measure(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=12, device="cpu")
    app = _app(run)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        text = screen_text(app)
        assert "RSS" in text and "n/a on CPU" in text
        assert "allocator n/a on CPU" in text
        assert "0 B" not in text  # nothing unmeasurable drawn as zero

    run_app(app, body, size=(140, 44))


def test_reader_errors_are_reported_and_polling_goes_on(tmp_path: Path) -> None:
    run = _live(tmp_path)
    good = FileRunReader(run, suggest=None).poll()
    reader = FakeReader(good)
    reader.fail = OSError("disk went away")
    app = DashboardApp(reader, refresh=0.05, clock=lambda: FIXED_NOW)

    async def body(pilot: Any) -> None:
        await wait_until(pilot, lambda: app.reader_error is not None, what="the error")
        assert "disk went away" in (app.reader_error or "")
        reader.fail = None
        await wait_until(pilot, lambda: app._shown is not None, timeout=5, what="recovery")

    run_app(app, body)


def test_a_newer_snapshot_replaces_a_stale_one() -> None:
    from memtop.tui.poller import SnapshotFetched

    a = SnapshotFetched(RunSnapshot(run_dir="r", run_id="a"))
    b = SnapshotFetched(RunSnapshot(run_dir="r", run_id="b"))
    assert a.can_replace(b)


def test_empty_run_waits_politely(tmp_path: Path) -> None:
    run = tmp_path / "20261122-000000-empty"
    run.mkdir()
    app = _app(run)

    async def body(pilot: Any) -> None:
        await wait_for_data(pilot, app)
        text = screen_text(app)
        assert "WAITING" in text and "waiting for the first step record" in text

    run_app(app, body)
