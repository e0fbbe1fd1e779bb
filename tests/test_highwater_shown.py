"""Each category's high-water mark within the step is shown beside the at-peak composition.

With ``zero_grad(set_to_none=True)`` the end-of-forward peak holds no gradients, yet they weigh
their full size from the backward pass to the next ``zero_grad``. ``memtop analyze`` (text and
JSON) and the dashboard's breakdown show that figure; the truth is the gradients' bytes computed
here from the model's own parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_memtop
from test_profiler_shapes import Mlp, zero_code

from memtop.runs.reader import load_run
from memtop.runs.records import StepRecord
from memtop.tui.fmt import fmt_bytes
from memtop.tui.history import SeriesPoints
from memtop.tui.reader import step_view
from memtop.tui.snapshot import RankSnapshot
from memtop.tui.widgets.breakdown import CategoryBar

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]


def _train(tmp_path: Path) -> tuple[Path, int]:
    torch.manual_seed(0)
    model = Mlp(64, 512, 64)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(1024, 64)  # activations dominate: the peak is the end of the forward pass
    with zero_code(tmp_path / "runs"):
        for _ in range(3):
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    grads = sum(p.numel() * p.element_size() for p in model.parameters())
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return run_dir, grads


def test_analyze_and_dashboard_show_the_high_water_mark(tmp_path: Path) -> None:
    run_dir, grads = _train(tmp_path)

    out = run_memtop("analyze", str(run_dir), "--json")
    assert out.returncode == 0, out.stderr
    rows = {b["category"]: b for b in json.loads(out.stdout)["peak"]["breakdown"]}
    assert rows["gradients"]["bytes"] == 0
    assert rows["gradients"]["highwater"] == grads
    assert rows["activations"]["highwater"] == rows["activations"]["bytes"] > 0
    assert rows["other"]["highwater"] is None

    text = run_memtop("analyze", str(run_dir), "--no-plot")
    assert text.returncode == 0, text.stderr
    assert "max in step" in text.stdout
    line = next(ln for ln in text.stdout.splitlines() if ln.strip().startswith("gradients"))
    assert fmt_bytes(grads) in line, line

    last = [r for r in load_run(run_dir).records.get(0, []) if isinstance(r, StepRecord)][-1]
    view = step_view(last)
    bar = CategoryBar()
    bar.show(RankSnapshot(0, view.device, 3, view, last.tracked, last.step, SeriesPoints((), (), (), 1), None, None))
    rendered = bar.build(80).plain
    assert "max within the step" in rendered and fmt_bytes(grads) in rendered, rendered
