"""Activations against autograd's own saved tensors, on real models.

Ground truth: a saved-tensors pack hook (a mechanism memtop does not use) sees every tensor
autograd saves during an identical forward pass; we sum its unique storages, minus parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import read_records
from torch import nn
from torch.utils.checkpoint import checkpoint

import memtop

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]


def saved_bytes_truth(model: nn.Module, forward: Callable[[], torch.Tensor]) -> int:
    exclude = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in exclude:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def profiled_activations(model: nn.Module, forward: Callable[[], torch.Tensor], runs_dir: Path, steps: int = 2) -> list[int]:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with memtop.profile(model, opt, runs_dir=runs_dir) as prof:
        for _ in range(steps):
            forward().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return [r["moments"]["forward_end"]["activations"] for r in read_records(prof.run_dir) if r["type"] == "step"]


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.features(x).flatten(1))
        return out


def _mlp() -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 10))
    x = torch.randn(64, 256)
    return model, lambda: model(x).logsumexp(1).mean()


def _conv() -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    model = ConvNet()
    x = torch.randn(8, 3, 32, 32)
    return model, lambda: model(x).pow(2).mean()


def _transformer() -> tuple[nn.Module, Callable[[], torch.Tensor]]:
    model = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True)
    x = torch.randn(4, 64, 128)
    return model, lambda: model(x).pow(2).mean()


@pytest.mark.parametrize("build", [_mlp, _conv, _transformer], ids=["mlp", "convnet-batchnorm", "transformer-block"])
def test_activations_match_autograd_saved_tensors(tmp_path: Path, build: Callable[[], Any]) -> None:
    torch.manual_seed(0)
    model, forward = build()
    truth = saved_bytes_truth(model, forward)
    measured = profiled_activations(model, forward, tmp_path)
    assert truth > 0
    for value in measured:
        assert abs(value - truth) <= 0.05 * truth, (value, truth)


class Stack(nn.Module):
    def __init__(self, ckpt: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(128, 512), nn.GELU(), nn.Linear(512, 128)) for _ in range(4))
        self.ckpt = ckpt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = checkpoint(b, x, use_reentrant=False) if self.ckpt else b(x)
        return x


def test_gradient_checkpointing_lowers_activations(tmp_path: Path) -> None:
    x = torch.randn(64, 128)
    plain, ckpt = Stack(False), Stack(True)
    a_plain = profiled_activations(plain, lambda: plain(x).pow(2).mean(), tmp_path / "a")[-1]
    a_ckpt = profiled_activations(ckpt, lambda: ckpt(x).pow(2).mean(), tmp_path / "b")[-1]
    assert 0 < a_ckpt < 0.5 * a_plain
    # what checkpointing keeps (each segment's input) is still counted, and nothing is recomputed
    truth = saved_bytes_truth(ckpt, lambda: ckpt(x).pow(2).mean())
    assert abs(a_ckpt - truth) <= 0.05 * truth, (a_ckpt, truth)


def test_bf16_autocast_lowers_activations(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256))
    x = torch.randn(2048, 256)  # activation-dominated, as in real training

    def fwd_fp32() -> torch.Tensor:
        out: torch.Tensor = model(x).float().pow(2).mean()
        return out

    def fwd_bf16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out: torch.Tensor = model(x).float().pow(2).mean()
            return out

    a32 = profiled_activations(model, fwd_fp32, tmp_path / "a")[-1]
    a16 = profiled_activations(model, fwd_bf16, tmp_path / "b")[-1]
    # autocast also saves bf16 copies of the weights (freed after backward, so activations too)
    assert a16 < 0.7 * a32
    truth16 = saved_bytes_truth(model, fwd_bf16)
    assert abs(a16 - truth16) <= 0.05 * truth16


def test_gradient_accumulation_takes_the_largest_micro_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    small, big = torch.randn(8, 64), torch.randn(32, 64)
    truth_big = saved_bytes_truth(model, lambda: model(big).sum())
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        for _ in range(2):
            model(small).sum().backward()
            model(big).sum().backward()
            model(small).sum().backward()
            opt.step()
            opt.zero_grad()
    steps = [r for r in read_records(prof.run_dir) if r["type"] == "step"]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["moments"]["forward_end"]["activations"] == truth_big
