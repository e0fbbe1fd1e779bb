"""Step-time overhead of memtop's default hook, and of torch.profiler(profile_memory=True) for reference.

Two figures: the A/B ratio of step times (what a user feels; noisy on a shared machine), and
memtop's own CPU time per step as the hook measures it about itself (its callbacks on the
training thread plus its record-writing thread), as a share of the baseline step.

One process, one workload (the transformer sample run), interleaved blocks: each round times a
block of steps without any profiler, a block under memtop's hook, and a block under torch.profiler,
in rotating order, so drift of the machine (other processes, thermal, allocator warm-up) hits all
three alike. The figure is the median over rounds of (profiled block time / baseline block time).

    python benchmarks/hook_overhead.py [--rounds 15] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent


def load_sample(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO / "sample_runs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_step(sample_args: list[str]) -> tuple[Callable[[], None], str]:
    tf = load_sample("transformer_finetune")
    args = tf.build_parser().parse_args(sample_args)
    device = torch.device("cpu")
    torch.manual_seed(args.seed)
    model = tf.build_model(args, device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    data = tf.BigramData(args.vocab_size, args.seed)
    batches = [data.batch(args.batch_size, args.seq_len) for _ in range(8)]
    amp = tf.autocast_dtype(args, device)
    i = [0]

    def step() -> None:
        x, y = batches[i[0] % len(batches)]
        i[0] += 1
        loss, _ = tf.lm_loss(model, x, y, amp)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, " ".join(["transformer_finetune.py", *sample_args])


CPU_TIMES: dict[int, float] = {}


def time_block(step: Callable[[], None], n: int) -> float:
    """Wall seconds per step; the block's process CPU seconds per step go to CPU_TIMES[id]."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    wall = (time.perf_counter() - t0) / n
    CPU_TIMES[len(CPU_TIMES)] = (time.process_time() - c0) / n
    return wall


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=20, help="steps per block")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings steady on a shared machine)")
    p.add_argument("--tensorboard-in-process", action="store_true", help="measure the explicit API's in-process TensorBoard thread too")
    p.add_argument("sample_args", nargs="*", default=[], help="flags for transformer_finetune.py")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # as under `memtop train`: TensorBoard events are written by memtop's own process, not here
    os.environ["MEMTOP_TENSORBOARD"] = "1" if args.tensorboard_in_process else "0"

    from memtop.profiler import hooks
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig

    step, workload = make_step(args.sample_args)
    for _ in range(10):
        step()  # warm-up: allocator, autograd caches, lazy optimizer state

    tmp = Path(tempfile.mkdtemp(prefix="memtop-bench-"))
    config = HookConfig.from_env()
    session = standalone_session(config, runs_dir=tmp, name="overhead")

    own_cpu: list[float] = []  # memtop's own CPU seconds per step, one figure per block

    # The hook stays installed for the whole run and is switched off (session.disabled: each
    # callback returns at its first line) outside memtop's blocks, so the figure is the cost of
    # measuring, not of installing and removing hooks between blocks.
    hooks.set_session(session)
    hooks.install(config, lambda: session)
    session.disabled = True

    def with_memtop(n: int) -> float:
        session.disabled = False
        before = session.hook_cpu_seconds + session.writer_cpu_seconds
        try:
            return time_block(step, n)
        finally:
            session.disabled = True
            own_cpu.append((session.hook_cpu_seconds + session.writer_cpu_seconds - before) / n)

    def with_torch_profiler(n: int) -> float:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True):
            return time_block(step, n)

    with_memtop(args.steps)  # first block pays for finding the optimizer and model among live objects
    first_block_cpu = own_cpu.pop() * args.steps
    runs: dict[str, list[float]] = {"baseline": [], "memtop": [], "torch.profiler": []}
    cpu: dict[str, list[float]] = {"baseline": [], "memtop": [], "torch.profiler": []}
    kinds: list[tuple[str, Callable[[int], float]]] = [
        ("baseline", lambda n: time_block(step, n)),
        ("memtop", with_memtop),
        ("torch.profiler", with_torch_profiler),
    ]
    for r in range(args.rounds):
        order = kinds[r % 3 :] + kinds[: r % 3]
        for name, fn in order:
            runs[name].append(fn(args.steps))
            cpu[name].append(CPU_TIMES[len(CPU_TIMES) - 1])
    hooks.uninstall()
    hooks.set_session(None)
    session.close()

    base = runs["baseline"]
    ratio = {name: statistics.median(v / b for v, b in zip(vals, base, strict=True)) for name, vals in runs.items() if name != "baseline"}
    cpu_ratio = {name: statistics.median(v / b for v, b in zip(vals, cpu["baseline"], strict=True)) for name, vals in cpu.items() if name != "baseline"}
    result = {
        "workload": workload,
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "steps_per_block": args.steps,
        "baseline_step_ms_median": statistics.median(base) * 1e3,
        "memtop_overhead_pct": (ratio["memtop"] - 1) * 100,
        "torch_profiler_overhead_pct": (ratio["torch.profiler"] - 1) * 100,
        "memtop_cpu_overhead_pct": (cpu_ratio["memtop"] - 1) * 100,
        "torch_profiler_cpu_overhead_pct": (cpu_ratio["torch.profiler"] - 1) * 100,
        "memtop_own_cpu_ms_per_step_median": statistics.median(own_cpu) * 1e3,
        "memtop_own_cpu_pct_of_step": statistics.median(own_cpu) / statistics.median(base) * 100,
        "memtop_first_block_cpu_ms": first_block_cpu * 1e3,
        "activation_walk_every_k_steps": session.sample_every,
        "activation_walk_ms": session._act_cost * 1e3,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
