"""Step-time overhead of memtop's default hook, and of torch.profiler(profile_memory=True) for reference.

Two figures per workload: the A/B ratio of step times (what a user feels; noisy on a shared
machine), and memtop's own CPU time per step as the hook measures it about itself (its callbacks
on the training thread plus its record-writing thread: the exit record's ``hook_cpu_seconds``),
as a share of the baseline step.

Workloads (CPU, one torch thread, AdamW): a model with many parameter tensors (an MLP of many
small layers: ``--many-layers 150`` gives 302, ``500`` gives 1,002), one with few (a 4-layer MLP,
8 tensors) and optionally a stack of transformer encoder layers, each at two step lengths (``--targets-ms 10 50``: the batch is scaled until the bare
step takes about that long). One process, interleaved blocks: each round times a block of steps
without any profiler, a block under memtop's hook and a block under torch.profiler, in rotating
order, so drift of the machine (other processes, allocator warm-up) hits all three alike. Each
ratio is the median over rounds of (profiled block time / baseline block time).

    python benchmarks/hook_overhead.py [--rounds 8] [--steps 10] [--targets-ms 10 50] [--json out.json]
        [--allocator synthetic|synthetic-steady]   # a CUDA-shaped step on CPU (synthetic_allocator)
        [--writer journal|direct]   # memtop train's step journal (the default) or every line written at once
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class Workload:
    name: str
    model: nn.Module
    make_batch: Callable[[int], torch.Tensor]
    batch: int

    @property
    def tensors(self) -> int:
        return len(list(self.model.parameters()))


def deep_mlp(layers: int) -> Workload:
    """Many small layers: 2 tensors each, so ``layers=150`` gives 302 parameter tensors (a CPU
    runs a 10 ms step of it; a transformer with as many tensors takes longer than that here)."""
    torch.manual_seed(0)
    blocks: list[nn.Module] = [nn.Linear(32, 64)]
    for _ in range(layers - 2):
        blocks += [nn.Linear(64, 64), nn.ReLU()]
    blocks.append(nn.Linear(64, 32))
    return Workload(f"deep mlp x{layers}", nn.Sequential(*blocks), lambda b: torch.randn(b, 32), 8)


def encoder_stack(layers: int) -> Workload:
    """Transformer encoder layers, 12 tensors each (``--encoder-layers``)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(32, 64),
        *[nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True) for _ in range(layers)],
        nn.Linear(64, 32),
    )
    return Workload(f"encoder x{layers}", model, lambda b: torch.randn(b, 16, 32), 4)


def small_mlp() -> Workload:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128))
    return Workload("mlp x4", model, lambda b: torch.randn(b, 128), 64)


def synthetic_allocator(moving: bool = True) -> Any:
    """A CPU stand-in for a CUDA device under memtop's CUDA backend (``--allocator synthetic``):
    the cost of a CUDA-shaped step without a GPU. It is memtop's ``CudaBackend`` whose allocator
    statistics come from a function that builds a nested dict of the caching allocator's layout
    (~130 figures, as ``torch._C._cuda_memoryStats`` returns) with figures that move a little at
    every read (``moving``; ``--allocator synthetic``): no step repeats the last record, every
    record is built and encoded, the worst case. ``moving=False`` (``--allocator synthetic-steady``):
    the figures hold still, as a real allocator's do when the tensors' shapes do not change, and
    the steps between measured ones repeat the last record. It leaves out what only a device has (the C++ side of the statistics call, NVML
    once a second), so its figure is a floor for a GPU step's, not one."""
    from memtop.profiler.backends import CudaBackend

    reads = [0]

    def nested_stats(index: int) -> dict[str, Any]:
        reads[0] += 1
        wobble = (reads[0] % 7) * 512 if moving else 0
        nested: dict[str, Any] = {}
        for stat in ("allocated", "allocated_bytes", "segment", "reserved_bytes", "active", "active_bytes", "inactive_split", "inactive_split_bytes", "requested_bytes"):
            nested[stat] = {pool: {m: (1 << 30) + wobble for m in ("current", "peak", "allocated", "freed")} for pool in ("all", "large_pool", "small_pool")}
        nested["allocated_bytes"]["all"]["peak"] = (3 << 29) + wobble
        nested["reserved_bytes"]["all"]["current"] = 2 << 30
        for stat in ("num_alloc_retries", "num_ooms", "num_sync_all_streams", "num_device_alloc", "num_device_free", "max_split_size"):
            nested[stat] = 0
        return nested

    class Synthetic(CudaBackend):
        def __init__(self) -> None:  # (no device: the parts of CudaBackend.__init__ that need none)
            self.device, self.index, self._carried = torch.device("cpu"), 0, 0
            self._raw, self._step_end_read = nested_stats, None

        def _reset_peak(self) -> None:
            self._carried = 0

        def device_usage(self) -> tuple[int | None, int | None]:
            return None, None

    return Synthetic()


def make_step(w: Workload) -> Callable[[], None]:
    opt = torch.optim.AdamW(w.model.parameters(), lr=1e-4, foreach=True)
    batches = [w.make_batch(w.batch) for _ in range(4)]
    i = [0]

    def step() -> None:
        x = batches[i[0] % len(batches)]
        i[0] += 1
        loss = w.model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_block(step: Callable[[], None], n: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per step."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def calibrate(w: Workload, target_s: float) -> Callable[[], None]:
    """Scale the batch until a bare step takes about ``target_s``."""
    for _ in range(6):
        step = make_step(w)
        for _ in range(3):
            step()
        wall = statistics.median(time_block(step, 3)[0] for _ in range(3))
        if abs(wall - target_s) <= 0.15 * target_s:
            break
        w.batch = max(1, round(w.batch * target_s / wall))
    return make_step(w)


def measure(w: Workload, target_ms: float, rounds: int, steps: int, allocator: str = "none", writer: str = "journal") -> dict[str, Any]:
    from memtop.profiler import hooks, step_journal
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig

    step = calibrate(w, target_ms / 1e3)
    tmp = Path(tempfile.mkdtemp(prefix="memtop-bench-"))
    # memtop train's writer keeps repeated step lines in a journal on /dev/shm (written in
    # batches); "direct": every line written at once, as outside memtop train
    journals = step_journal.make_dir() if writer == "journal" else None
    if journals is not None:
        os.environ[step_journal.ENV_DIR] = str(journals)
    else:
        os.environ.pop(step_journal.ENV_DIR, None)
    config = HookConfig.from_env()
    session = standalone_session(config, runs_dir=tmp, name="overhead")
    if allocator.startswith("synthetic"):
        session._backend = synthetic_allocator(moving=allocator == "synthetic")  # (a benchmark's stand-in: see synthetic_allocator)
    # The hook stays installed for the whole run and is switched off (session.disabled: each
    # callback returns at its first line) outside memtop's blocks, so the figure is the cost of
    # measuring, not of installing and removing hooks between blocks.
    hooks.set_session(session)
    hooks.install(config, lambda: session)
    own_cpu: list[float] = []

    def bare(n: int) -> tuple[float, float]:
        return time_block(step, n)

    def with_memtop(n: int) -> tuple[float, float]:
        session.disabled = False
        before = session.hook_cpu_seconds + session.writer_cpu_seconds
        try:
            return time_block(step, n)
        finally:
            session.disabled = True
            own_cpu.append((session.hook_cpu_seconds + session.writer_cpu_seconds - before) / n)

    def with_torch_profiler(n: int) -> tuple[float, float]:
        from torch.profiler import ProfilerActivity, profile

        try:
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True):
                return time_block(step, n)
        finally:
            # the profiler's results are Python objects in reference cycles: collect them here, or
            # the next collection (in whichever block comes next) pays for them
            gc.collect()

    with_memtop(steps)  # the first block pays for finding the optimizer and models among live objects
    first_block_ms = own_cpu.pop() * steps * 1e3
    kinds: list[tuple[str, Callable[[int], tuple[float, float]]]] = [("baseline", bare), ("memtop", with_memtop), ("torch.profiler", with_torch_profiler)]
    wall: dict[str, list[float]] = {k: [] for k, _ in kinds}
    cpu: dict[str, list[float]] = {k: [] for k, _ in kinds}
    for r in range(rounds):
        for name, fn in kinds[r % 3 :] + kinds[: r % 3]:
            w_s, c_s = fn(steps)
            wall[name].append(w_s)
            cpu[name].append(c_s)
    hooks.uninstall()
    hooks.set_session(None)
    session.close()
    if journals is not None:
        step_journal.remove_dir(journals, tmp)
        os.environ.pop(step_journal.ENV_DIR, None)

    def ratio(series: dict[str, list[float]], name: str) -> float:
        return statistics.median(v / b for v, b in zip(series[name], series["baseline"], strict=True))

    base_ms = statistics.median(wall["baseline"]) * 1e3
    own_ms = statistics.median(own_cpu) * 1e3
    return {
        "workload": w.name if allocator == "none" else f"{w.name}, {allocator} allocator",
        "writer": writer if journals is not None else "direct",
        "parameter_tensors": w.tensors,
        "batch": w.batch,
        "baseline_step_ms": round(base_ms, 2),
        "memtop_wall_pct": round((ratio(wall, "memtop") - 1) * 100, 2),
        "memtop_process_cpu_pct": round((ratio(cpu, "memtop") - 1) * 100, 2),
        "memtop_hook_cpu_ms_per_step": round(own_ms, 4),
        "memtop_hook_cpu_pct_of_step": round(own_ms / base_ms * 100, 3),
        "torch_profiler_wall_pct": round((ratio(wall, "torch.profiler") - 1) * 100, 2),
        "torch_profiler_vs_memtop_wall": round(ratio(wall, "torch.profiler") / ratio(wall, "memtop"), 3),
        "memtop_first_block_cpu_ms": round(first_block_ms, 1),
        # (``_act_cost``: the session before it was split, for before/after runs of this file)
        "activation_walk_ms": round(getattr(getattr(session, "sampling", None), "act_cost", getattr(session, "_act_cost", 0.0)) * 1e3, 3),
        "activation_walk_every_k_steps": session.sample_every,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="steps per block")
    p.add_argument("--targets-ms", type=float, nargs="+", default=[10.0, 50.0], help="bare step lengths to scale the batch to")
    p.add_argument("--many-layers", type=int, default=150, help="layers of the many-tensor MLP (2 tensors each)")
    p.add_argument("--encoder-layers", type=int, default=0, help="also measure a stack of this many transformer encoder layers")
    p.add_argument("--only", choices=["many", "few", "encoder"], default=None)
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument(
        "--allocator",
        choices=["none", "synthetic", "synthetic-steady"],
        default="none",
        help="a CUDA-shaped step on CPU: allocator figures that move at every read (synthetic) or hold still (synthetic-steady); see synthetic_allocator",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings steady on a shared machine)")
    p.add_argument(
        "--writer",
        choices=["journal", "direct"],
        default="journal",
        help="memtop train's (repeated step lines kept in a /dev/shm journal, written in batches) or every line written at once (memtop.profile() outside memtop train)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["MEMTOP_TENSORBOARD"] = "0"  # as under `memtop train`: events are written by memtop's own process
    results = []
    for target in args.targets_ms:
        builders: dict[str, Callable[[], Workload]] = {"many": lambda: deep_mlp(args.many_layers), "few": small_mlp}
        if args.encoder_layers:
            builders["encoder"] = lambda: encoder_stack(args.encoder_layers)
        for key, build in builders.items():
            if args.only in (None, key):
                res = measure(build(), target, args.rounds, args.steps, args.allocator, args.writer)
                res["target_ms"] = target
                print(json.dumps(res), flush=True)
                results.append(res)
    out = {"torch": torch.__version__, "threads": args.threads, "rounds": args.rounds, "steps_per_block": args.steps, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
