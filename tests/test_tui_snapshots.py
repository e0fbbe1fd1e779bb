"""Screen snapshots of the dashboard (pytest-textual-snapshot), fixed clock and terminal size.

The main fixture is a real recorded run (tests/fixtures/record_dashboard_run.py: a sample run under
`memtop train --no-tui`, times shifted to a fixed start). The advisor is replaced by a canned one so
these screens change when the dashboard changes, not when the advice rules do. CUDA-only screens
(several GPUs, an OOM) come from the synthetic run factory, since CI has no GPU.

Update after an intended change: ``pytest tests/test_tui_snapshots.py --snapshot-update``, then look
at the report (snapshot_report.html) or render the SVGs to PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runfactory import GiB, MiB, make_run
from textual.widgets import DataTable
from tuikit import FIXED_NOW, FakeChild, wait_for_data, wait_until

from memtop.analyzers.suggestion import Suggestion
from memtop.runs.reader import RunData
from memtop.tui.app import DashboardApp
from memtop.tui.reader import FileRunReader
from memtop.tui.widgets.advice import SuggestionItem

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "runs" / "20231114-221320-gaussian_splat"
LARGE = (160, 48)
SMALL = (80, 24)


def canned_advice(run: RunData) -> list[Suggestion]:
    """Two suggestions in the advisor's shape, independent of its rules."""
    command = list(run.meta.command if run.meta is not None and run.meta.command else ("python", "train.py"))
    return [
        Suggestion(
            "gradient_checkpointing", "turn on gradient checkpointing", "activations are 58% of the peak", 7 * MiB,
            "≈30% slower steps", "in code: wrap each block in torch.utils.checkpoint", "medium",
        ),
        Suggestion(
            "resolution", "halve --resolution", "activations scale with the pixels", 5 * MiB, "less detail learned",
            " ".join([*command, "--resolution", "32"]), "medium", command=(*command, "--resolution", "32"),
        ),
    ]


def _app(run: Path, child: FakeChild | None = None) -> DashboardApp:
    return DashboardApp(
        FileRunReader(run, suggest=canned_advice),
        child=child,
        refresh=0.05,
        clock=lambda: FIXED_NOW,
        plot_interval=0.0,
        paint_interval=0.0,
    )


async def _ready(pilot: Any) -> None:
    """Until the screen is final: data and advice shown, suggestion widgets mounted, nothing newer queued."""
    app = pilot.app
    await wait_for_data(pilot, app)

    def settled() -> bool:
        shown = app._shown
        if shown is None or app._latest is not shown:
            return False
        if len(app.query(SuggestionItem)) != len(shown.suggestions.items):
            return False
        # a DataTable measures new rows on its next idle (the dashboard's tables size their columns
        # when they fill them, tests/test_tui_app.py; textual's private flag, read only here)
        return not any(getattr(t, "_require_update_dimensions", False) for t in app.query(DataTable))

    await wait_until(pilot, settled, what="a settled screen")
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_recorded_run(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(_app(FIXTURE), terminal_size=size, run_before=_ready)


def test_recorded_run_help(snap_compare: Any) -> None:
    assert snap_compare(_app(FIXTURE), terminal_size=(120, 40), run_before=_ready, press=["question_mark"])


def _cuda_live(tmp_path: Path, ranks: int = 1) -> Path:
    def per_step(step: int, rank: int) -> dict[str, Any]:
        return {
            "activations": (40 + (step % 9) + 2 * rank) * GiB // 4,
            "fragmentation": (300 + 4 * step) * MiB,
        }

    run = make_run(tmp_path, steps=90, ranks=ranks, per_step=per_step, exit_code=None, status="running")
    (run / "output.log").write_text("".join(f"step {i}/500 loss {4 / i:.4f}\n" for i in range(10, 91, 10)))
    return run


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_cuda_live_run(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(_app(_cuda_live(tmp_path), FakeChild()), terminal_size=size, run_before=_ready)


def test_cuda_four_ranks_quit_confirmation(snap_compare: Any, tmp_path: Path) -> None:
    app = _app(_cuda_live(tmp_path, ranks=4), FakeChild())
    # 80x24: the modal covers most of the large-tensor table (behind it, that table was once drawn
    # with header-wide columns: memtop/tui/widgets/columns.py)
    assert snap_compare(app, terminal_size=SMALL, run_before=_ready, press=["q"])


def test_cuda_oom(snap_compare: Any, tmp_path: Path) -> None:
    oom = {
        "type": "oom", "schema": 1, "rank": 0, "time": 1_700_000_023.0, "step": 91, "device": "cuda:0",
        "message": "CUDA out of memory. Tried to allocate 4.00 GiB", "requested_bytes": 4 * GiB,
        "categories": {"parameters": 2 * GiB, "gradients": 2 * GiB, "optimizer_state": 4 * GiB, "activations": 66 * GiB, "other": GiB},
        "allocated": 75 * GiB, "reserved": 78 * GiB, "device_free": 200 * MiB,
        "large_tensors": [
            {"name": "saved[BmmBackward0].self", "category": "activations", "bytes": 8 * GiB, "shape": [64, 32, 1024, 1024], "dtype": "torch.float32"},
            {"name": "saved[SoftmaxBackward0].result", "category": "activations", "bytes": 8 * GiB, "shape": [64, 32, 1024, 1024], "dtype": "torch.float32"},
        ],
    }
    exit_rec = {"type": "exit", "schema": 1, "rank": 0, "time": 1_700_000_023.5, "reason": "oom", "exception": "OutOfMemoryError", "steps": 90}
    run = make_run(tmp_path, steps=90, exit_code=1, status="oom", extra_records=[oom, exit_rec])
    assert snap_compare(_app(run), terminal_size=(120, 36), run_before=_ready)
