"""benchmarks/hook_overhead.py stays runnable: one tiny round of each kind, the CUDA-shaped one
(``--allocator synthetic``: memtop's CudaBackend over a stand-in statistics source) included.
Its figures are not checked (timings belong in docs/performance.md, never in tests); that the
synthetic run built a record every step, with two allocator reads a step, is."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import hook_overhead  # noqa: E402

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]


@pytest.mark.parametrize("allocator", ["none", "synthetic", "synthetic-steady"])
def test_one_small_round_runs(allocator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMTOP_TENSORBOARD", "0")
    res = hook_overhead.measure(hook_overhead.small_mlp(), target_ms=2.0, rounds=1, steps=4, allocator=allocator)
    assert res["memtop_hook_cpu_ms_per_step"] > 0
    assert res["workload"].endswith(f"{allocator} allocator") == (allocator != "none")


def test_the_synthetic_allocator_is_read_twice_a_step_and_never_repeats_a_record(tmp_path: Path) -> None:
    import torch

    from memtop.profiler import hooks
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig
    from tests.conftest import read_records

    config = HookConfig(tensorboard=False)
    session = standalone_session(config, tmp_path, "synthetic")
    backend = hook_overhead.synthetic_allocator()
    source = backend._raw
    reads = [0]

    def counted(index: int) -> Any:
        reads[0] += 1
        return source(index)

    backend._raw = counted
    session._backend = backend
    hooks.set_session(session)
    hooks.install(config, lambda: session)
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        for _ in range(12):
            model(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
    finally:
        session.close()
        hooks.uninstall()
        hooks.set_session(None)
    steps = [r for r in read_records(session.run_dir) if r["type"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert all(r["peak"] is not None and r["allocated"] + r["fragmentation_bytes"] == r["reserved"] for r in steps)
    assert reads[0] == 2 * 12  # the forward end's, and the step's last moment's (which the record reuses)
