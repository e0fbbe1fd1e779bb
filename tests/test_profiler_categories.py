"""Parameters, gradients and optimizer state are exact to the byte against numel x element_size.

Ground truth is computed here from the model and the optimizer's documented state layout, not
from memtop's accounting code. Real torch, real optimizers, real steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import read_records
from torch import nn

import memtop


def nbytes(tensors: list[torch.Tensor]) -> int:
    uniq = {id(t): t for t in tensors}
    return sum(t.numel() * t.element_size() for t in uniq.values())


pytestmark = [pytest.mark.usefixtures("fresh_hooks")]


class Net(nn.Module):
    """Tied embedding/head, BatchNorm buffers, and a frozen sub-module."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(300, 48)
        self.block = nn.Sequential(nn.Linear(48, 96), nn.BatchNorm1d(96), nn.ReLU(), nn.Linear(96, 48))
        self.frozen = nn.Linear(48, 48)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.head = nn.Linear(48, 300, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = self.block(h) + self.frozen(h)
        out: torch.Tensor = self.head(h)
        return out


def train(model: nn.Module, opt: torch.optim.Optimizer, runs_dir: Path, steps: int = 3) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    with memtop.profile(model, opt, runs_dir=runs_dir) as prof:
        for _ in range(steps):
            x = torch.randint(0, 300, (32,))
            loss = nn.functional.cross_entropy(model(x), x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return [r for r in read_records(prof.run_dir) if r["type"] == "step"]


def trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize(
    ("make_opt", "state_bytes"),
    [
        # SGD with momentum keeps one momentum buffer per trainable parameter.
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: nbytes(ps)),
        # Adam/AdamW: exp_avg + exp_avg_sq per parameter, plus a float32 scalar `step` tensor each.
        (lambda ps: torch.optim.Adam(ps, lr=1e-3), lambda ps: 2 * nbytes(ps) + 4 * len(ps)),
        (lambda ps: torch.optim.AdamW(ps, lr=1e-3), lambda ps: 2 * nbytes(ps) + 4 * len(ps)),
    ],
    ids=["sgd-momentum", "adam", "adamw"],
)
def test_parameters_gradients_state_exact(tmp_path: Path, make_opt: Any, state_bytes: Any) -> None:
    model = Net()
    params = trainable(model)
    opt = make_opt(params)
    steps = train(model, opt, tmp_path)
    assert len(steps) == 3
    expected_params = nbytes(list(model.parameters()) + list(model.buffers()))
    # the tied weight is one tensor: counting it twice would add 300*48*4 bytes
    assert expected_params < sum(p.numel() * p.element_size() for _, p in model.named_parameters(remove_duplicate=False)) + nbytes(list(model.buffers()))
    for rec in steps:
        moment = rec["moments"]["optimizer_step"]
        assert moment["parameters"] == expected_params
        assert moment["gradients"] == nbytes(params)  # frozen layer has no .grad
        assert moment["optimizer_state"] == state_bytes(params)
        assert rec["device"] == "cpu"
        assert rec["categories"]["other"] is None and rec["peak"] is None  # no CPU allocator counter


def test_large_tensor_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMTOP_LARGE_TENSOR_BYTES", str(32 * 1024))
    model = Net()
    opt = torch.optim.Adam(trainable(model), lr=1e-3)
    steps = train(model, opt, tmp_path, steps=2)
    names = {t["name"]: t for t in steps[-1]["large_tensors"]}
    assert "model.embed.weight" in names  # the tied weight, under its first name
    assert "model.head.weight" not in names
    emb = names["model.embed.weight"]
    assert emb["bytes"] == 300 * 48 * 4 and emb["shape"] == [300, 48] and emb["dtype"] == "torch.float32"
    assert emb["category"] == "parameters"
    assert "model.embed.weight.grad" in names or "optimizer.state[model.embed.weight].exp_avg" in names
    state_names = [n for n in names if n.startswith("optimizer.state[")]
    assert all(n.endswith((".exp_avg", ".exp_avg_sq")) for n in state_names)


def test_buffers_only_change_counted_once_with_shared_storage(tmp_path: Path) -> None:
    """Two parameters that are views of one flat storage count the storage once."""
    flat = torch.zeros(1000)
    model = nn.Module()
    model.a = nn.Parameter(flat[:600].view(20, 30))
    model.b = nn.Parameter(flat[600:].view(10, 40))
    opt = torch.optim.SGD([model.a, model.b], lr=0.1)
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        for _ in range(2):
            (model.a.sum() + model.b.sum()).backward()
            opt.step()
            opt.zero_grad()
    rec = [r for r in read_records(prof.run_dir) if r["type"] == "step"][-1]
    assert rec["moments"]["optimizer_step"]["parameters"] == 1000 * 4


def test_replaced_parameters_are_recounted_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Densification (3D Gaussian splatting) swaps a parameter for a bigger one mid-run."""
    monkeypatch.setenv("MEMTOP_LARGE_TENSOR_BYTES", "1024")
    model = nn.Module()
    model.sh = nn.Parameter(torch.zeros(1000, 16, 3))
    opt = torch.optim.Adam([model.sh], lr=1e-3)
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        for step in range(6):
            model.sh.pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
            if step == 2:  # grow: new tensor, optimizer state carried over as 3DGS does
                old = model.sh
                state = opt.state.pop(old)
                model.sh = nn.Parameter(torch.cat([old.detach(), torch.zeros(500, 16, 3)]))
                state["exp_avg"] = torch.cat([state["exp_avg"], torch.zeros(500, 16, 3)])
                state["exp_avg_sq"] = torch.cat([state["exp_avg_sq"], torch.zeros(500, 16, 3)])
                opt.param_groups[0]["params"][0] = model.sh
                opt.state[model.sh] = state
                del old
    steps = [r for r in read_records(prof.run_dir) if r["type"] == "step"]
    small, big = 1000 * 48 * 4, 1500 * 48 * 4
    assert [r["moments"]["optimizer_step"]["parameters"] for r in steps] == [small] * 3 + [big] * 3
    assert [r["moments"]["optimizer_step"]["gradients"] for r in steps] == [small] * 3 + [big] * 3
    assert steps[-1]["moments"]["optimizer_step"]["optimizer_state"] == 2 * big + 4
    names = {t["name"] for t in steps[-1]["large_tensors"]}
    assert "optimizer.state[model.sh].exp_avg" in names and "model.sh" in names
