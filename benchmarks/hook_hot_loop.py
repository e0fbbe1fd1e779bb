"""The hook's CPU per step in a hot loop: one small model, thousands of short steps, one process.

Complements ``hook_overhead.py`` (interleaved blocks at a target step length): here the steps are
~1-2 ms, so the per-step fixed cost of the hook dominates and shows small changes above the noise
of a loaded machine. Prints the hook CPU per step (``session.hook_cpu_seconds``, the callbacks'
thread CPU time) as JSON; ``--profile`` prints the hook's functions from ``cProfile`` (wall time:
on a loaded machine a call that is descheduled looks costly).

Usage: ``python benchmarks/hook_hot_loop.py --steps 3000 [--profile]``
(``MEMTOP_TENSORBOARD=0`` for the ``memtop train`` path, where the hook has no TensorBoard thread).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
from pathlib import Path

import torch
from torch import nn


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    from memtop.profiler import hooks
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig

    torch.set_num_threads(1)
    model = nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    opt = torch.optim.AdamW(model.parameters(), foreach=True)
    x = torch.randn(8, 64)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()

    config = HookConfig.from_env()
    session = standalone_session(config, runs_dir=Path(tempfile.mkdtemp(prefix="memtop-hot-")), name="hot")
    hooks.set_session(session)
    hooks.install(config, lambda: session)
    try:
        for _ in range(args.warmup):
            step()
        before = session.hook_cpu_seconds
        prof = cProfile.Profile() if args.profile else None
        if prof is not None:
            prof.enable()
        for _ in range(args.steps):
            step()
        if prof is not None:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats("memtop", 30)
        result = {
            "hook_cpu_us_per_step": round((session.hook_cpu_seconds - before) / args.steps * 1e6, 1),
            "sample_every": session.sample_every,
        }
    finally:
        hooks.uninstall()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
