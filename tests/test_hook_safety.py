"""The hook never keeps tensors alive, never breaks training, and never imports UI code."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, read_records
from torch import nn

import memtop
from memtop.profiler import hooks
from memtop.profiler.session import Session

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]


def test_profiler_keeps_no_tensor_alive(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
    opt = torch.optim.Adam(model.parameters())
    refs: list[weakref.ref[Any]] = []
    with memtop.profile(model, opt, runs_dir=tmp_path):
        for _ in range(3):
            x = torch.randn(8, 32)
            h = model[0](x)
            refs.append(weakref.ref(h))  # an activation of this step
            loss = model[2](model[1](h)).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            del x, h, loss
        session = hooks.current_session()
        assert session is not None and session.step == 3
        refs.append(weakref.ref(model[0].weight))
        refs.append(weakref.ref(next(iter(opt.state.values()))["exp_avg"]))
        refs.append(weakref.ref(model))
        refs.append(weakref.ref(opt))
        del model, opt
        gc.collect()
        # the session is still open and must not be what keeps any of them alive
        assert [r() is None for r in refs] == [True] * len(refs)


def test_naming_the_model_leaves_the_training_frame_untouched(tmp_path: Path) -> None:
    """Finding the model's variable name must not pin old locals (f_locals snapshots) nor change them."""
    model = nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with memtop.profile(runs_dir=tmp_path):  # zero-code style: the name is found from this frame
        batch = torch.randn(4, 8)
        probe = weakref.ref(batch)
        model(batch).sum().backward()
        opt.step()
        opt.zero_grad()
        kept = batch.clone()
        del batch
        gc.collect()
        assert probe() is None
        assert kept.shape == (4, 8) and model.weight.shape == (8, 8)  # locals intact


def test_a_hook_that_raises_does_not_stop_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Session, t_outputs: object) -> None:
        raise ValueError("synthetic hook failure")

    monkeypatch.setattr(Session, "on_backward", boom)
    torch.manual_seed(0)
    model = nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 16), torch.randn(64, 1)
    losses = []
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        for _ in range(20):
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    assert losses[-1] < losses[0]  # training went on and learned
    recs = read_records(prof.run_dir)
    warnings = [r for r in recs if r["type"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["disabled"] is True and "synthetic hook failure" in warnings[0]["message"]
    assert not [r for r in recs if r["type"] == "step"]  # hook off after the error
    assert torch.autograd._engine_run_backward.__name__ != "_engine_run_backward_wrapper"  # type: ignore[attr-defined]  # patch removed


def test_training_results_are_identical_with_and_without_the_hook(tmp_path: Path) -> None:
    def train() -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, y = torch.randn(32, 16), torch.randn(32, 1)
        for _ in range(10):
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    baseline = train()
    with memtop.profile(runs_dir=tmp_path):
        profiled = train()
    assert torch.equal(baseline, profiled)


def test_double_backward_still_works_under_the_hook(tmp_path: Path) -> None:
    """create_graph=True (gradient penalties) must give the same second derivatives."""
    x = torch.randn(10, requires_grad=True)
    expected = torch.autograd.grad(torch.autograd.grad(x.exp().sigmoid().sum(), x, create_graph=True)[0].sum(), x)[0]
    model = nn.Linear(10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with memtop.profile(model, opt, runs_dir=tmp_path):
        g = torch.autograd.grad(x.exp().sigmoid().sum(), x, create_graph=True)[0]
        got = torch.autograd.grad(g.sum(), x)[0]
    assert torch.allclose(expected, got)


def test_profiler_imports_no_ui_code_in_a_fresh_interpreter(tmp_path: Path) -> None:
    code = f"""
import sys, json, torch
import memtop
from torch import nn
m = nn.Linear(4, 4); o = torch.optim.SGD(m.parameters(), lr=0.1)
with memtop.profile(m, o, runs_dir={str(tmp_path)!r}):
    for _ in range(2):
        m(torch.randn(2, 4)).sum().backward(); o.step(); o.zero_grad()
    with memtop.stage("s"):
        pass
bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich', 'plotext', 'pandas'))
print(json.dumps(bad))
"""
    env = {"MEMTOP_TENSORBOARD": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
