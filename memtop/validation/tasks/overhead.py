"""Hook overhead on GPU steps of about 10, 50 and 200 ms: bare, under ``memtop.profile`` (the
default hook, as ``memtop train`` installs it), and under ``torch.profiler.profile(profile_memory=True)``
with CPU and CUDA activities.

One process, the transformer sample (GPT-2-small shape, bf16 autocast). A micro-batch size is
calibrated to about 10 ms a step; 50 and 200 ms steps accumulate 5 and 20 micro-batches per
optimizer step (constant memory, and the hook pays its per-forward cost on each). Blocks of steps
are interleaved in rotating order; the figure is the median over rounds of (block time / bare block
time). Blocks end with torch.cuda.synchronize(); each profiled block's first step (finding the model,
the profiler's start) and the profiler's trace processing at its exit are outside the timing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["MEMTOP_TENSORBOARD"] = "0"  # as under memtop train: events are written by memtop's own process

import torch  # noqa: E402

import memtop  # noqa: E402
from memtop.runs.records import ExitRecord  # noqa: E402
from memtop.validation.checks import read_records  # noqa: E402
from memtop.validation.taskkit import DEVICE, REPO, Result, md_table, task_args  # noqa: E402

TARGETS_MS = (10, 50, 200)
FLAGS = ["--n-layers", "12", "--d-model", "768", "--n-heads", "12", "--vocab-size", "32000", "--seq-len", "512", "--amp", "--dtype", "bf16"]


def load_sample(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO / "sample_runs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Workload:
    def __init__(self) -> None:
        self.tf = load_sample("transformer_finetune")
        self.args = self.tf.build_parser().parse_args(FLAGS)
        self.device = torch.device(DEVICE)
        torch.manual_seed(0)
        self.model = self.tf.build_model(self.args, self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.amp = self.tf.autocast_dtype(self.args, self.device)
        self.data = self.tf.BigramData(self.args.vocab_size, 0)
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.i = 0

    def set_batch(self, batch_size: int) -> None:
        self.batches = [tuple(t.to(self.device) for t in self.data.batch(batch_size, self.args.seq_len)) for _ in range(2)]

    def step(self, micro: int) -> None:
        for _ in range(micro):
            x, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            loss, _ = self.tf.lm_loss(self.model, x, y, self.amp)
            (loss / micro).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], n: int) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n


def calibrate(w: Workload, res: Result) -> tuple[int, float]:
    """The micro-batch whose step takes about 10 ms (doubling, within a quarter of the card)."""
    cuda = DEVICE == "cuda"
    limit = torch.cuda.get_device_properties(0).total_memory // 4 if cuda else 1 << 62
    chosen, ms, last_peak = 1, 0.0, 0
    for b in (1, 2, 4, 8, 16, 32, 64):
        if last_peak * 2 > limit:  # doubling the batch would go past a quarter of the card
            break
        w.set_batch(b)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            w.step(1)
        t = timed(lambda: w.step(1), 5) * 1e3
        last_peak = torch.cuda.max_memory_allocated() if cuda else 0
        if last_peak > limit:
            break
        chosen, ms = b, t
        if t >= 9.0:
            break
    w.set_batch(chosen)
    res.note(f"Calibrated: micro-batch {chosen} × {w.args.seq_len} tokens, {ms:.1f} ms per optimizer step of one micro-batch.")
    return chosen, ms


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    rounds = 3 if args.quick else 5
    w = Workload()
    _, micro_ms = calibrate(w, res)
    tmp = Path(tempfile.mkdtemp(prefix="memtop-overhead-"))
    rows: list[list[str]] = []
    figures: dict[str, Any] = {}
    worst = 0.0
    try:
        for target in TARGETS_MS:
            micro = max(1, round(target / max(micro_ms, 0.1)))
            n = max(3, round(400 / target))
            step = lambda m=micro: w.step(m)  # noqa: E731
            own_cpu: list[float] = []

            def bare(n: int = n, step: Callable[[], None] = step) -> float:
                return timed(step, n)

            def with_memtop(n: int = n, step: Callable[[], None] = step, own_cpu: list[float] = own_cpu) -> float:
                with memtop.profile(w.model, w.opt, runs_dir=tmp, name="overhead") as prof:
                    step()
                    t = timed(step, n)
                exits = read_records(prof.run_dir / "rank0.jsonl").of_class(ExitRecord)
                if exits and exits[-1].hook_cpu_seconds is not None:
                    own_cpu.append(exits[-1].hook_cpu_seconds / (n + 1))
                shutil.rmtree(prof.run_dir, ignore_errors=True)
                return t

            def with_torch_profiler(n: int = n, step: Callable[[], None] = step) -> float:
                from torch.profiler import ProfilerActivity, profile

                activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if DEVICE == "cuda" else [ProfilerActivity.CPU]
                with profile(activities=activities, profile_memory=True):
                    step()
                    return timed(step, n)

            kinds: list[tuple[str, Callable[[], float]]] = [("bare", bare), ("memtop", with_memtop), ("torch.profiler", with_torch_profiler)]
            times: dict[str, list[float]] = {k: [] for k, _ in kinds}
            bare()
            for r in range(rounds):
                for name, fn in kinds[r % 3:] + kinds[: r % 3]:
                    times[name].append(fn())
            base = times["bare"]
            ratio = {k: statistics.median(v / b for v, b in zip(times[k], base, strict=True)) for k in ("memtop", "torch.profiler")}
            step_ms = statistics.median(base) * 1e3
            mem_pct = (ratio["memtop"] - 1) * 100
            worst = max(worst, mem_pct)
            cpu_ms = statistics.median(own_cpu) * 1e3 if own_cpu else None
            figures[f"{target}ms"] = {"micro_batches": micro, "steps_per_block": n, "bare_step_ms": step_ms, "memtop_pct": mem_pct,
                                      "torch_profiler_pct": (ratio["torch.profiler"] - 1) * 100, "memtop_own_cpu_ms_per_step": cpu_ms,
                                      "blocks": times}
            rows.append([f"~{target} ms", str(micro), f"{step_ms:.1f}", f"{mem_pct:+.2f}%", f"{(ratio['torch.profiler'] - 1) * 100:+.1f}%",
                         f"{cpu_ms:.3f}" if cpu_ms is not None else "n/a", f"{cpu_ms / step_ms * 100:.2f}%" if cpu_ms is not None else "n/a"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res.note("\n" + md_table(["step", "micro-batches", "bare ms/step", "memtop", "torch.profiler(profile_memory)", "memtop own CPU ms/step",
                              "own CPU / step"], rows))
    res.note(f"\n{rounds} rounds per size. The contract: under 1% of step time for steps of 10 ms and more.")
    if worst >= 1.0:
        res.fail(f"memtop's overhead reached {worst:+.2f}% (contract: under 1%)")
    res.headline = "memtop " + ", ".join(f"{r[0]}: {r[3]}" for r in rows) + " (torch.profiler " + ", ".join(r[4] for r in rows) + ")"
    res.figures = figures
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
