"""The hook's CPU per step in a loop of one small model, one process.

Complements ``hook_overhead.py`` (interleaved blocks at a target step length against no profiler
and torch.profiler). Three uses:

- default: thousands of short steps (~1-2 ms), so the per-step fixed cost of the hook dominates
  and shows small changes above the noise of a loaded machine. Prints the hook CPU per step
  (``session.hook_cpu_seconds``, the callbacks' thread CPU time) as JSON.
- ``--profile``: the hook's functions from ``cProfile`` (wall time: on a loaded machine a call that
  is descheduled looks costly).
- ``--callbacks``: the two callbacks of a steady step (no per-tensor measuring) called back to
  back, with no training work between them: the hook's Python at its hot-cache cost (µs per step,
  best of 5 rounds of ``--steps``), the figure that shows a change to the session's code above
  the noise.
- ``--parts``: where the hook's CPU goes, per part, at the step length of ``--batch`` (``--batch
  5500`` is ~10 ms here): each part's thread CPU per step, read around it (the reads add ~1 us a
  part), then the floor of any design, in interleaved blocks of the same process: the hook's two
  callbacks doing nothing (the wrappers: CPU accounting, error guard), and doing nothing but
  writing one step line with ``os.write``. On a CPU whose caches the training step evicts, the
  same Python costs several times what it costs in a hot loop; the floor shows how much.

Usage: ``python benchmarks/hook_hot_loop.py --steps 3000 [--profile]``,
``python benchmarks/hook_hot_loop.py --callbacks --steps 20000``,
``python benchmarks/hook_hot_loop.py --parts --batch 5500 --steps 600``
(``MEMTOP_TENSORBOARD=0`` for the ``memtop train`` path, where the hook has no TensorBoard thread).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

# the parts timed by --parts: (module, class or None, attribute, label)
PARTS = (
    ("memtop.profiler.session", "Session", "on_backward", "forward end (whole callback)"),
    ("memtop.profiler.session", "Session", "_consider_step_end", "step end: the moment"),
    ("memtop.profiler.session", "Session", "_finish_step", "step end: the record (all below)"),
    ("memtop.profiler.backends", "CpuBackend", "end_of_step", "  RSS read (/proc/self/statm)"),
    ("memtop.profiler.sampling", "SamplingBudget", "step_done", "  sampling budget"),
    ("memtop.profiler.step_record", "StepRecordBuilder", "build", "  record dict"),
    ("memtop.profiler.writers", "RankFileWriter", "put", "  writer: put (all below)"),
    ("memtop.profiler.writers", "RecordEncoder", "encode", "    encode"),
    ("memtop.profiler.writers", "RankFileWriter", "put_repeat", "  writer: put_repeat (a repeated record, all below)"),
    ("memtop.profiler.writers", "RecordEncoder", "encode_repeat", "    encode_repeat (the repeat's template filled)"),
    ("memtop.profiler.rankfile", None, "distributed_rank", "    torch.distributed rank check"),
)


def _timed_parts() -> dict[str, int]:
    """Wrap each part of PARTS (on its class) with a thread-CPU counter; ns per part."""
    import importlib

    spent: dict[str, int] = {}
    for module_name, cls_name, attr, label in PARTS:
        module = importlib.import_module(module_name)
        owner: Any = getattr(module, cls_name) if cls_name else module
        if not hasattr(owner, attr):
            continue
        fn = getattr(owner, attr)

        def timed(*args: Any, _fn: Callable[..., Any] = fn, _label: str = label, **kwargs: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0) + time.thread_time_ns() - t0

        setattr(owner, attr, timed)
    return spent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8, help="rows per step (5500: ~10 ms steps on this VM)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--parts", action="store_true", help="CPU per part, and the floor of the callbacks and one write")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds of the --parts floor blocks")
    parser.add_argument("--callbacks", action="store_true", help="the steady step's two callbacks back to back, no training between")
    args = parser.parse_args(argv)

    spent = _timed_parts() if args.parts else {}
    from memtop.profiler import hooks
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig

    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.AdamW(model.parameters(), foreach=True)
    x = torch.randn(args.batch, 64)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()

    config = HookConfig.from_env()
    session = standalone_session(config, runs_dir=Path(tempfile.mkdtemp(prefix="memtop-hot-")), name="hot")
    hooks.set_session(session)
    hooks.install(config, lambda: session)
    result: dict[str, Any] = {}
    try:
        for _ in range(args.warmup):
            step()
        if args.callbacks:
            result = {"callbacks_us_per_step": _callbacks(session, model, opt, x, args.steps)}
            return result
        spent.clear()
        before = session.hook_cpu_seconds
        t0 = time.perf_counter()
        prof = cProfile.Profile() if args.profile else None
        if prof is not None:
            prof.enable()
        for _ in range(args.steps):
            step()
        if prof is not None:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats("memtop", 30)
        result = {
            "step_ms": round((time.perf_counter() - t0) / args.steps * 1e3, 2),
            "hook_cpu_us_per_step": round((session.hook_cpu_seconds - before) / args.steps * 1e6, 1),
            "sample_every": session.sample_every,
        }
        if args.parts:
            result["parts_us_per_step"] = {label: round(ns / args.steps / 1e3, 1) for label, ns in spent.items()}
            result["floor_us_per_step"] = _floor(session, step, args.steps // args.rounds, args.rounds)
    finally:
        hooks.uninstall()
        print(json.dumps(result, indent=1 if args.parts else None))
    return result


def _callbacks(session: Any, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, n: int) -> float:
    """µs per steady step of the two callbacks alone: the sampling interval is held at 10^9 steps
    (this loop's "steps" are microseconds long, so the budget would otherwise measure every one)."""
    from memtop.profiler import hooks

    sampling = getattr(session, "sampling", session)  # (the session before the split kept these itself)
    for name in ("_adapt", "_adapt_sampling"):
        if hasattr(sampling, name):
            setattr(sampling, name, lambda: None)
    sampling.sample_every = 10**9
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()
    loss = model(x).sum()
    loss.backward(retain_graph=True)  # a graph to hand to the forward-end callback, kept
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            hooks._on_backward(loss)
            hooks._on_optimizer_post(opt, (), {})
        rounds.append((time.perf_counter_ns() - t0) / n / 1e3)
    return round(min(rounds), 2)


def _floor(session: Any, step: Callable[[], None], n: int, rounds: int) -> dict[str, float]:
    """Hook CPU per step with the callbacks replaced (on the session instance) by nothing, and by
    one ``os.write`` of a step line; the full hook in the same rotation for comparison."""
    fd = os.open(os.path.join(tempfile.mkdtemp(prefix="memtop-floor-"), "lines.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    line = (json.dumps({"type": "step", "step": 0, "time": time.time(), "pad": "x" * 800}) + "\n").encode()

    def nothing(*_args: Any) -> None:
        return None

    def write_line(*_args: Any) -> None:
        os.write(fd, line)

    modes: dict[str, dict[str, Callable[..., None]]] = {
        "full hook": {},
        "callbacks doing nothing": {"on_backward": nothing, "on_optimizer_step": nothing},
        "callbacks + one os.write": {"on_backward": nothing, "on_optimizer_step": write_line},
    }
    per_mode: dict[str, list[float]] = {m: [] for m in modes}
    names = list(modes)
    for r in range(rounds):
        for mode in names[r % len(names) :] + names[: r % len(names)]:
            for attr, fn in modes[mode].items():
                setattr(session, attr, fn)
            before = session.hook_cpu_seconds
            for _ in range(n):
                step()
            per_mode[mode].append((session.hook_cpu_seconds - before) / n * 1e6)
            for attr in modes[mode]:
                delattr(session, attr)
    os.close(fd)
    return {m: round(statistics.median(v), 1) for m, v in per_mode.items()}


if __name__ == "__main__":
    main()
