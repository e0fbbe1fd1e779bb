"""`memtop.stage()` records: before/after/peak of a pipeline stage, nested in steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import read_records
from torch import nn

import memtop

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]


def test_stage_records_on_cpu(tmp_path: Path) -> None:
    model = nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        for _ in range(2):
            with memtop.stage("load"):
                x = torch.randn(32, 64)
            with memtop.stage("grow"):
                big = torch.ones(64 * 1024 * 1024, dtype=torch.uint8)  # 64 MiB, touched: resident
                big.add_(1)
            del big
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    recs = read_records(prof.run_dir)
    stages = [r for r in recs if r["type"] == "stage"]
    assert [s["name"] for s in stages] == ["load", "grow", "load", "grow"]
    assert [s["step"] for s in stages] == [0, 0, 1, 1]
    for s in stages:
        assert s["measure"] == "rss" and s["duration"] >= 0
        assert isinstance(s["before"], int) and isinstance(s["after"], int)
    first_grow = stages[1]
    assert first_grow["after"] - first_grow["before"] >= 60 * 1024 * 1024  # the 64 MiB it kept
    assert first_grow["peak"] is None or first_grow["peak"] >= first_grow["after"]


def test_stage_without_a_profiler_is_a_no_op() -> None:
    with memtop.stage("alone"):
        y = torch.ones(3) * 2
    assert y.sum().item() == 6
