"""Steps between measured ones: the hook's cheap path (carried figures, reused record parts).

Most steps of a real run measure nothing per tensor: the figures are carried from the last
measured step and the step record is copied from the last one with the time, the step and the
resident set size set anew. These tests run with a sampling budget so small that only the first
step and steps with a change signal are measured, and check every step's parameters, gradients
and optimizer state against truth computed here (unique storages of the tensors the test holds),
and that no record handed to the writer is changed afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from memtop.profiler.step_line import STEP_KEYS
from tests.conftest import read_records

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]


def storage_bytes(tensors: list[torch.Tensor | None]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if t is not None:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def truth(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int, int]:
    params = [*model.parameters(), *model.buffers()]
    param_ptrs = {t.untyped_storage().data_ptr() for t in params}
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() not in param_ptrs]
    return storage_bytes(list(params)), storage_bytes([p.grad for p in model.parameters()]), storage_bytes(list(state))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out * self.scale


def replace_scale(model: Net, opt: torch.optim.Optimizer) -> None:
    """``model.scale`` replaced by a new parameter, in the optimizer too (densification)."""
    old = model.scale
    del opt.state[old]
    new = nn.Parameter(old.detach().clone())
    opt.param_groups[0]["params"] = [new if p is old else p for p in opt.param_groups[0]["params"]]
    model.scale = new


@pytest.fixture
def sampled(tmp_path: Path) -> Iterator[Any]:
    """A session that measures per-tensor figures only at the first step and on change signals."""
    from memtop.profiler import hooks
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig

    config = HookConfig(tensorboard=False, activations="auto", overhead_budget=1e-12)
    session = standalone_session(config, tmp_path, "sampled")
    hooks.set_session(session)
    hooks.install(config, lambda: session)
    try:
        yield session
    finally:
        session.close()
        hooks.uninstall()
        hooks.set_session(None)


def test_carried_steps_are_exact_and_change_signals_measure_at_once(sampled: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from memtop.profiler.writers import RankFileWriter

    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(4, 16)
    handed: list[tuple[dict[str, Any], str]] = []  # every step record as the writer got it
    handed_steps: list[int] = []
    put, put_repeat = RankFileWriter.put, RankFileWriter.put_repeat

    def keep(writer: RankFileWriter, rec: dict[str, Any]) -> None:
        handed.append((rec, json.dumps(rec)))
        handed_steps.append(rec["step"])
        put(writer, rec)

    def keep_repeat(writer: RankFileWriter, last: dict[str, Any], time: float, step: int, step_time: float | None, used: int | None) -> None:
        handed.append((last, json.dumps(last)))  # the record repeated: never changed either
        handed_steps.append(step)
        put_repeat(writer, last, time, step, step_time, used)

    monkeypatch.setattr(RankFileWriter, "put", keep)
    monkeypatch.setattr(RankFileWriter, "put_repeat", keep_repeat)
    forward_truth: list[tuple[int, int, int]] = []
    end_truth: list[tuple[int, int, int]] = []
    for step in range(1, 13):
        if step == 5:  # a parameter replaced between steps (densification): weak-reference signal
            replace_scale(model, opt)
        if step == 9:  # a parameter group added between steps: the optimizer's shape changed
            extra = nn.Parameter(torch.zeros(8))
            model.register_parameter("shift", extra)
            opt.add_param_group({"params": [extra]})
        opt.zero_grad(set_to_none=True)
        out = model(x)
        if step >= 9:
            out = out + model.shift
        loss = out.pow(2).mean()
        forward_truth.append(truth(model, opt))
        loss.backward()
        opt.step()
        end_truth.append(truth(model, opt))
    sampled.close()
    records = [r for r in read_records(sampled.run_dir) if r["type"] == "step"]
    assert [r["step"] for r in records] == list(range(1, 13))
    measured = [r["measured_step"] for r in records]
    # step 2 too: the budget is first decided from step 2's step time
    assert measured == [1, 2, 2, 2, 5, 5, 5, 5, 9, 9, 9, 9], measured
    for r, fwd, end in zip(records, forward_truth, end_truth, strict=True):
        m = r["moments"]
        got_fwd = (m["forward_end"]["parameters"], m["forward_end"]["gradients"], m["forward_end"]["optimizer_state"])
        got_end = (m["optimizer_step"]["parameters"], m["optimizer_step"]["gradients"], m["optimizer_step"]["optimizer_state"])
        assert got_fwd == fwd, (r["step"], got_fwd, fwd)
        assert got_end == end, (r["step"], got_end, end)
    # each record its own: the keys of the format in order (the first step's model description
    # only there), its own step time, and nothing changed after it was handed to the writer
    assert "model_kinds" in records[0]
    for prev, r in zip(records, records[1:], strict=False):
        assert tuple(r) == STEP_KEYS, tuple(r)
        assert r["step_time"] == pytest.approx(r["time"] - prev["time"], abs=1e-6)
        assert r["device_used"] is not None and r["device_used"] > 0
    assert handed_steps == list(range(1, 13))
    assert any(step != json.loads(snapshot)["step"] for step, (_, snapshot) in zip(handed_steps, handed, strict=True))  # some steps were repeats
    for rec, snapshot in handed:
        assert json.dumps(rec) == snapshot, rec["step"]
