"""The steady step (memtop/profiler/steady.py) writes what the general path writes.

A steady step's moments ask only what could have changed since the last step. The same training,
run once with the plan and once with it taken away (every moment on the general path), must give
the same records but for the time, the step time and the resident set size: across parameters
replaced, a parameter group added, gradient accumulation starting, a second optimizer joining,
and a model watched by hand mid-run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from test_profiler_sampled_steps import Net, replace_scale  # the same small model and change
from torch import nn

from memtop.profiler.steady import SteadyStep
from tests.conftest import read_records

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]

OWN_FIGURES = ("time", "step_time", "device_used")  # each step's own: differ between any two runs


def train(run_dir: Path) -> list[dict[str, Any]]:
    """36 steps with changes along the way, under a session that measures per-tensor figures
    only at its first steps and on change signals (so most steps are steady ones)."""
    from memtop.profiler import hooks
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig

    torch.manual_seed(0)
    config = HookConfig(tensorboard=False, activations="auto", overhead_budget=1e-12)
    session = standalone_session(config, run_dir, "steady")
    hooks.set_session(session)
    hooks.install(config, lambda: session)
    model = Net()
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(4, 16)
    critic = nn.Linear(8, 1)
    critic_opt: torch.optim.Optimizer | None = None
    try:
        for step in range(1, 37):
            if step == 6:  # a parameter replaced between steps (densification)
                replace_scale(model, opt)
            if step == 11:  # a parameter group added between steps
                extra = nn.Parameter(torch.zeros(8))
                model.register_parameter("shift", extra)
                opt.add_param_group({"params": [extra]})
            if step == 21:  # a model watched by hand
                session.watch_model(critic, "critic")
            opt.zero_grad(set_to_none=True)
            passes = 2 if 16 <= step < 26 else 1  # gradient accumulation for a while
            for _ in range(passes):
                out = model(x)
                if step >= 11:
                    out = out + model.shift
                out.pow(2).mean().backward()
            opt.step()
            if step >= 30:  # a second optimizer joins (the steps now end at one of two)
                if critic_opt is None:
                    critic_opt = torch.optim.SGD(critic.parameters(), lr=0.1)
                critic_opt.zero_grad()
                critic(out.detach()).mean().backward()
                critic_opt.step()
    finally:
        session.close()
        hooks.uninstall()
        hooks.set_session(None)
    return [r for r in read_records(session.run_dir) if r["type"] == "step"]


def without_own_figures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in OWN_FIGURES} for r in records]


def test_the_steady_path_writes_what_the_general_path_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[bool] = []
    carries = SteadyStep.carries

    def counted(self: SteadyStep, step: int) -> bool:
        ok = carries(self, step)
        taken.append(ok)
        return ok

    monkeypatch.setattr(SteadyStep, "carries", counted)
    steady = train(tmp_path / "steady")
    assert sum(taken) >= 15, taken  # most forward ends took the steady path

    monkeypatch.setattr(SteadyStep, "plan", classmethod(lambda cls, session, opt: None))
    general = train(tmp_path / "general")

    assert [r["step"] for r in steady] == list(range(1, len(steady) + 1))
    assert len(steady) == len(general) >= 30
    for a, b in zip(without_own_figures(steady), without_own_figures(general), strict=True):
        assert a == b, (a["step"], a, b)
    measured = [r["measured_step"] for r in steady]
    assert 6 in measured and 11 in measured  # the change signals measured at once on both paths
    by_step = {r["step"]: r for r in steady}
    assert by_step[6]["activations_step"] == 6  # from the moment the change was seen: the forward end
    assert by_step[11]["activations_step"] == 11
