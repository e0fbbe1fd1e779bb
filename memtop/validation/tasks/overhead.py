"""Hook overhead on GPU steps of about 10, 50 and 200 ms: bare, under ``memtop.profile`` (the
default hook, as ``memtop train`` installs it), and under ``torch.profiler.profile(profile_memory=True)``
with CPU and CUDA activities.

One process, the transformer sample (GPT-2-small shape, bf16 autocast). A micro-batch size is
calibrated to about 10 ms a step; 50 and 200 ms steps accumulate 5 and 20 micro-batches per
optimizer step (constant memory, and the hook pays its per-forward cost on each). Blocks of steps
are interleaved in rotating order; the figure is the median over rounds of (block time / bare block
time). Blocks end with torch.cuda.synchronize(); the profiler's start and its trace processing at
its exit are outside the timing.

memtop's session stays open for each step size, as in a training run: a warm-up of steps first
(finding the model, the first steps that measure everything, the sampling interval settling), then
the hook is switched off (each callback returns at its first line) outside memtop's blocks, as
``benchmarks/hook_overhead.py`` does on a CPU. A session opened per block would time its warm-up
every block, which a training run pays once. Also reported: how many of memtop's step records
repeat the one before (all but the time, step, step time and device figure; memtop writes those
without building a record, docs/performance.md), and memtop's own time per step
(``hook_cpu_seconds`` over the memtop blocks)."""

from __future__ import annotations

import dataclasses
import functools
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
from memtop.profiler import step_journal  # noqa: E402
from memtop.runs.records import StepRecord  # noqa: E402
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


def repeated_steps(steps: list[StepRecord]) -> tuple[int, int]:
    """(records equal to the one before but for their time, step, step time and device figure, records)."""
    own = {"time": None, "step": 0, "step_time": None, "device_used": None}
    bare = [dataclasses.replace(rec, **own) for rec in steps]  # type: ignore[arg-type]
    return sum(a == b for a, b in zip(bare, bare[1:], strict=False)), len(steps)


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
    journals = step_journal.make_dir()  # memtop train's writer: repeated step lines kept in a journal, written in batches
    if journals is not None:
        os.environ[step_journal.ENV_DIR] = str(journals)
    rows: list[list[str]] = []
    figures: dict[str, Any] = {}
    worst = 0.0
    try:
        for target in TARGETS_MS:
            micro = max(1, round(target / max(micro_ms, 0.1)))
            n = max(3, round(400 / target))
            step = functools.partial(w.step, micro)
            own_cpu: list[float] = []
            with memtop.profile(w.model, w.opt, runs_dir=tmp, name=f"overhead-{target}ms") as prof:
                session = prof.session
                for _ in range(max(5, round(300 / target))):  # warm-up under the hook
                    step()
                session.disabled = True

                def bare(n: int = n, step: Callable[[], None] = step) -> float:
                    return timed(step, n)

                def with_memtop(n: int = n, step: Callable[[], None] = step, own_cpu: list[float] = own_cpu, session: Any = session) -> float:
                    session.disabled = False
                    before = session.hook_cpu_seconds
                    try:
                        return timed(step, n)
                    finally:
                        session.disabled = True
                        own_cpu.append((session.hook_cpu_seconds - before) / n)

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
                session.disabled = False
            repeated, recorded = repeated_steps(read_records(prof.run_dir / "rank0.jsonl").of_class(StepRecord))
            shutil.rmtree(prof.run_dir, ignore_errors=True)
            base = times["bare"]
            ratio = {k: statistics.median(v / b for v, b in zip(times[k], base, strict=True)) for k in ("memtop", "torch.profiler")}
            step_ms = statistics.median(base) * 1e3
            mem_pct = (ratio["memtop"] - 1) * 100
            worst = max(worst, mem_pct)
            cpu_ms = statistics.median(own_cpu) * 1e3 if own_cpu else None
            figures[f"{target}ms"] = {"micro_batches": micro, "steps_per_block": n, "bare_step_ms": step_ms, "memtop_pct": mem_pct,
                                      "torch_profiler_pct": (ratio["torch.profiler"] - 1) * 100, "memtop_own_cpu_ms_per_step": cpu_ms,
                                      "repeated_records": repeated, "step_records": recorded, "blocks": times}
            rows.append([f"~{target} ms", str(micro), f"{step_ms:.1f}", f"{mem_pct:+.2f}%", f"{(ratio['torch.profiler'] - 1) * 100:+.1f}%",
                         f"{cpu_ms:.3f}" if cpu_ms is not None else "n/a", f"{cpu_ms / step_ms * 100:.2f}%" if cpu_ms is not None else "n/a",
                         f"{repeated} of {recorded}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if journals is not None:
            os.environ.pop(step_journal.ENV_DIR, None)
            shutil.rmtree(journals, ignore_errors=True)
    writer = f"memtop train's step journal in {journals}" if journals is not None else "every line written at once (no /dev/shm)"
    res.note(f"\nRecord writer: {writer}.")
    res.note("\n" + md_table(["step", "micro-batches", "bare ms/step", "memtop", "torch.profiler(profile_memory)", "memtop own CPU ms/step",
                              "own CPU / step", "records repeating the one before"], rows))
    res.note(f"\n{rounds} rounds per size. The contract: under 1% of step time for steps of 10 ms and more.")
    if worst >= 1.0:
        res.fail(f"memtop's overhead reached {worst:+.2f}% (contract: under 1%)")
    res.headline = "memtop " + ", ".join(f"{r[0]}: {r[3]}" for r in rows) + " (torch.profiler " + ", ".join(r[4] for r in rows) + ")"
    res.figures = figures
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
