"""What one operation costs right after a CPU training step, against the same in a hot loop.

The hook runs between training steps whose tensors evict the CPU's caches; each piece of
interpreter and kernel code it touches first is fetched again. This prints, per operation, the
median wall time (µs) of that operation done right after a training step (after a few warm-up
operations, as the hook's earlier work would do) and in a hot loop: the first column is what the
hook pays for it, the second what a micro-benchmark shows.

Usage: ``python benchmarks/cold_costs.py [--batch 800] [--steps 1400]``
(the 4-layer MLP of ``hook_overhead.py`` at one torch thread; ``--batch 800`` is ~10 ms here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from time import perf_counter_ns

import torch
from torch import nn

LINE = '{"type":"step","base":1,"time":%s,"step":%s,"step_time":%s,"allocated":null,"reserved":null,"peak":null,"tracked":12345678,"device_used":%s}\n'


def operations(fd: int) -> dict[str, Callable[[float, int], object]]:
    pieces = LINE.split("%s")
    a, b, c, d, e = pieces
    lock = threading.RLock()

    def take_lock(now: float, i: int) -> None:
        with lock:
            pass
    return {
        "nothing (two clock reads)": lambda now, i: None,
        "time.thread_time()": lambda now, i: time.thread_time(),
        "repr of a float": lambda now, i: repr(now),
        "a step line, % template": lambda now, i: (LINE % (now, i, 0.01, 123456789)).encode(),
        "a step line, f-string": lambda now, i: f"{a}{now}{b}{i}{c}{0.01}{d}{123456789}{e}".encode(),
        "an RLock taken and released": take_lock,
        "os.write of a step line (ext4, O_APPEND)": lambda now, i: os.write(fd, b"x" * 200 + b"\n"),
        "os.getppid() (a system call)": lambda now, i: os.getppid(),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=800)
    parser.add_argument("--steps", type=int, default=1400)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128))
    opt = torch.optim.AdamW(model.parameters(), foreach=True)
    x = torch.randn(args.batch, 128)
    fd = os.open(os.path.join(tempfile.mkdtemp(prefix="memtop-cold-"), "lines.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    ops = operations(fd)
    names = list(ops)
    cold: dict[str, list[int]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for i in range(args.steps):
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        name = names[i % len(names)]
        scratch = {"a": 1}
        scratch["b"] = len(scratch)  # a few plain operations first, as the hook's own would be
        now = time.time()
        start = perf_counter_ns()
        ops[name](now, i)
        cold[name].append(perf_counter_ns() - start)
    step_ms = (time.perf_counter() - t0) / args.steps * 1e3
    hot: dict[str, float] = {}
    for name in names:
        op, now = ops[name], time.time()
        runs = []
        for _ in range(5):
            start = perf_counter_ns()
            for i in range(2000):
                op(now, i)
            runs.append((perf_counter_ns() - start) / 2000)
        hot[name] = min(runs) / 1e3
    os.close(fd)
    result = {
        name: {"after a step (us)": round(statistics.median(cold[name]) / 1e3, 2), "hot loop (us)": round(hot[name], 2)} for name in names
    }
    print(json.dumps({"step_ms": round(step_ms, 2), "operations": result}, indent=1))
    return result


if __name__ == "__main__":
    main()
