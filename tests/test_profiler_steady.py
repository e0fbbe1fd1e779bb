"""The steady step (memtop/profiler/steady.py) writes what the general path writes.

A steady step's moments ask only what could have changed since the last step. The same training,
run once with the plan and once with it taken away (every moment on the general path), must give
the same records but for the time, the step time and the resident set size: across parameters
replaced, a parameter group added, gradient accumulation starting, a second optimizer joining,
and a model watched by hand mid-run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from hookkit import count_repeats, count_steady_moments
from test_profiler_sampled_steps import Net, replace_scale  # the same small model and change
from torch import nn

from memtop.profiler.steady import SteadyStep
from tests.conftest import read_records

if TYPE_CHECKING:
    from memtop.profiler.config import HookConfig
    from memtop.profiler.session import Session

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


@contextmanager
def hooked_net(session: Session, config: HookConfig) -> Iterator[tuple[Net, torch.optim.Optimizer, torch.Tensor]]:
    """The hook installed for ``session``, and the small model, its optimizer and a batch; the
    session closed and the hook taken out after."""
    from memtop.profiler import hooks

    hooks.set_session(session)
    hooks.install(config, lambda: session)
    model = Net()
    try:
        yield model, torch.optim.AdamW(model.parameters()), torch.randn(4, 16)
    finally:
        session.close()
        hooks.uninstall()
        hooks.set_session(None)


def without_own_figures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in OWN_FIGURES} for r in records]


def test_the_steady_path_writes_what_the_general_path_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = count_steady_moments(monkeypatch)
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


def train_plain(run_dir: Path, steps: int) -> tuple[list[dict[str, Any]], list[int]]:
    """A loop that changes nothing, measured every few steps (the interval moving mid-run) and
    recounted every 7 steps: the plan's clock (when the next measured step or recount is due)
    must stop the steady path exactly where the general path measures or recounts.
    Returns the step records and the steps at which parameters were recounted exactly."""
    from memtop.profiler import sampling
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig
    from memtop.profiler.static_counts import StaticCounts

    torch.manual_seed(0)
    config = HookConfig(tensorboard=False, activations="auto")
    session = standalone_session(config, run_dir, "clock")
    recounts: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampling, "PARAM_RECOUNT_EVERY", 7)

        def adapt(self: sampling.SamplingBudget) -> None:  # one interval, then a narrower one from a steady step on
            self.sample_every, self.recount_every = (5 if session.step < 23 else 3), 7

        mp.setattr(sampling.SamplingBudget, "_adapt", adapt)
        parameters = StaticCounts.parameters

        def counted(self: StaticCounts, step: int) -> Any:
            before = self.param_total_step
            total = parameters(self, step)
            if self.param_total_step != before:
                recounts.append(step)
            return total

        mp.setattr(StaticCounts, "parameters", counted)
        session.sampling.recount_every = 7
        with hooked_net(session, config) as (model, opt, x):
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                model(x).pow(2).mean().backward()
                opt.step()
    return [r for r in read_records(session.run_dir) if r["type"] == "step"], recounts


def test_the_plans_clock_stops_where_the_general_path_measures_or_recounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = count_steady_moments(monkeypatch)
    steady, steady_recounts = train_plain(tmp_path / "steady", 60)
    assert sum(taken) >= 20, taken
    monkeypatch.setattr(SteadyStep, "plan", classmethod(lambda cls, session, opt: None))
    general, general_recounts = train_plain(tmp_path / "general", 60)
    assert len(steady) == len(general) == 60
    for a, b in zip(without_own_figures(steady), without_own_figures(general), strict=True):
        assert a == b, (a["step"], a, b)
    measured = sorted({r["measured_step"] for r in steady})
    gaps = {b - a for a, b in zip(measured, measured[1:], strict=False)}
    assert 5 in gaps and 3 in gaps, measured  # both intervals were lived through
    assert steady_recounts == general_recounts, (steady_recounts, general_recounts)  # at the same steps on both paths
    assert len(steady_recounts) >= 60 // 7 - 1, steady_recounts


class HeldBytes:
    """What a stand-in CUDA allocator holds, set by the training loop: memtop's CudaBackend reads
    it through its statistics source (the nested layout torch._C._cuda_memoryStats returns), so the
    session takes the CUDA path on a CPU. The figures stay the same from step to step, as a real
    allocator's do when the tensors' shapes do not change, except where the loop changes them."""

    def __init__(self) -> None:
        self.allocated = 40 << 20
        self.peak = 64 << 20
        self.reserved = 96 << 20
        self.reads = 0

    def stats(self, index: int) -> dict[str, Any]:
        self.reads += 1

        def stat(current: int, peak: int) -> dict[str, dict[str, int]]:
            return {"all": {"current": current, "peak": peak, "allocated": peak, "freed": peak - current}}

        return {
            "allocated_bytes": stat(self.allocated, self.peak),
            "reserved_bytes": stat(self.reserved, self.reserved),
            "inactive_split_bytes": stat(self.reserved - self.peak, self.reserved - self.peak),
        }


def cuda_shaped_backend(held: HeldBytes) -> Any:
    from memtop.profiler.backends import CudaBackend

    class StandIn(CudaBackend):
        def __init__(self) -> None:  # (the parts of CudaBackend.__init__ that need no device)
            self.device, self.index, self._carried = torch.device("cpu"), 0, 0
            self._raw, self._step_end_read = held.stats, None

        def _reset_peak(self) -> None:
            self._carried = 0
            held.peak = held.allocated

        def device_usage(self) -> tuple[int | None, int | None]:
            return None, 141 << 30

    return StandIn()


def train_cuda_shaped(run_dir: Path, steps: int) -> tuple[list[dict[str, Any]], int]:
    """A loop whose allocator figures hold still but at a few steps (one moment's bytes, the
    peak, the reserved pool), measured every 5 steps. Returns the step records and the reads."""
    from memtop.profiler import sampling
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig

    torch.manual_seed(0)
    config = HookConfig(tensorboard=False, activations="auto")
    session = standalone_session(config, run_dir, "cuda-shaped")
    held = HeldBytes()
    session._backend = cuda_shaped_backend(held)
    with pytest.MonkeyPatch.context() as mp:

        def adapt(self: sampling.SamplingBudget) -> None:
            self.sample_every = 5

        mp.setattr(sampling.SamplingBudget, "_adapt", adapt)
        with hooked_net(session, config) as (model, opt, x):
            for step in range(1, steps + 1):
                opt.zero_grad(set_to_none=True)
                held.peak = max(held.peak, (64 << 20) + (8192 if step == 18 else 0))  # a higher peak once
                held.reserved = (96 << 20) if step < 22 else (128 << 20)  # the pool grows, and stays
                for micro in range(2 if step >= 36 else 1):  # gradient accumulation from step 36 on
                    # one forward end holds more at two steps; the first micro-batch's has no gradients yet
                    held.allocated = (40 << 20) + (4096 if step in (13, 27) else 0) - (1024 if step >= 36 and micro == 0 else 0)
                    model(x).pow(2).mean().backward()
                held.allocated = (40 << 20) + (2048 if step == 33 else 0)  # and one step's end
                opt.step()
    return [r for r in read_records(session.run_dir) if r["type"] == "step"], held.reads


def test_cuda_shaped_steps_repeat_where_the_allocator_holds_still(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA a step between measured ones repeats the last record where the allocator's figures
    are the last record's: the same records as the general path (no plan) and as building every
    record anew (no repeat at all), with one allocator read at each moment."""
    from memtop.profiler.step_record import StepRecordBuilder

    repeats = count_repeats(monkeypatch)
    planned, reads = train_cuda_shaped(tmp_path / "planned", 50)
    planned_repeats, repeats[0] = repeats[0], 0
    monkeypatch.setattr(SteadyStep, "plan", classmethod(lambda cls, session, opt: None))
    general, _ = train_cuda_shaped(tmp_path / "general", 50)
    general_repeats, repeats[0] = repeats[0], 0
    monkeypatch.setattr(StepRecordBuilder, "repeat_of", lambda self, *a: None)
    monkeypatch.setattr(StepRecordBuilder, "repeat_of_planned", lambda self, *a: None)
    built, _ = train_cuda_shaped(tmp_path / "built", 50)
    assert repeats[0] == 0
    assert len(planned) == len(general) == len(built) == 50
    for a, b, c in zip(without_own_figures(planned), without_own_figures(general), without_own_figures(built), strict=True):
        assert a == b == c, (a["step"], a, b, c)
    assert reads == 2 * 35 + 3 * 15  # each forward end's and the step's last moment's (which the record reuses)
    assert planned_repeats >= 25 and general_repeats >= 15, (planned_repeats, general_repeats)  # most steps between measured ones repeated
    accumulating = [r["step"] for r in planned if r["step"] > 36 and r["measured_step"] != r["step"]]
    assert planned_repeats - general_repeats >= len(accumulating) - 4, (planned_repeats, general_repeats, accumulating)  # (the plan keeps each micro-batch's)
    by_step = {r["step"]: r for r in planned}
    assert by_step[13]["moments"]["forward_end"]["allocated"] == (40 << 20) + 4096 != by_step[12]["moments"]["forward_end"]["allocated"]
    assert by_step[18]["peak"] == (64 << 20) + 8192 and by_step[22]["reserved"] == 128 << 20
    assert by_step[33]["moments"]["optimizer_step"]["allocated"] == by_step[34]["moments"]["optimizer_step"]["allocated"] + 2048
    assert all(sum(r["categories"].values()) == r["peak"] for r in planned)
