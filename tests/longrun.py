"""Long synthetic runs written by the hook's own record writer (run format v2: full records,
deltas and the step index), for the tests and benchmarks of long-run analysis.

The records have the hook's exact key order (so they take the writer's fast path), CUDA-shaped
figures with noise, one spike two thirds in, cache releases now and then, and 16 large tensors.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from memtop.profiler.writers import RankFileWriter
from memtop.runs.format import SCHEMA_VERSION
from memtop.runs.rundir import write_meta

MiB = 1024 * 1024
GiB = 1024 * MiB


LARGE = [{"name": f"model.layers.{i}.mlp.weight", "category": "parameters", "bytes": 64 * MiB, "shape": [4096, 4096], "dtype": "torch.float32"} for i in range(16)]


def hook_record(step: int, rng: random.Random, spike: int, t0: float = 1_700_000_000.0) -> dict[str, Any]:
    params, grads, optim = 2 * GiB, 2 * GiB, 4 * GiB
    acts = 6 * GiB + rng.randint(-200, 200) * MiB + (3 * GiB if step == spike else 0)
    other = 512 * MiB
    measured = step - step % 8
    tracked = params + grads + optim + acts
    peak = tracked + other
    allocated = params + grads + optim + other // 4
    reserved = peak + rng.randint(100, 900) * MiB
    if step % 5000 == 0:
        reserved = allocated + 64 * MiB  # empty_cache(): a cache release
    return {
        "type": "step",
        "schema": SCHEMA_VERSION,
        "rank": 0,
        "time": t0 + step * 0.25,
        "step": step,
        "device": "cuda:0",
        "step_time": 0.25 if step > 1 else None,
        "allocated": allocated,
        "reserved": reserved,
        "peak": peak,
        "categories": {"parameters": params, "gradients": grads, "optimizer_state": optim, "activations": acts, "other": other},
        "peak_point": "forward_end",
        "activations_step": measured,
        "measured_step": measured,
        "tracked": tracked,
        "fragmentation_bytes": reserved - allocated,
        "fragmentation_pct": 100.0 * (reserved - allocated) / reserved,
        "inactive_split_bytes": 2 * MiB,
        "device_used": reserved + 600 * MiB,
        "device_total": 80 * GiB,
        "large_tensors": LARGE,  # the same list while unchanged, as the hook hands it
        "moments": {
            "forward_end": {"allocated": allocated, "parameters": params, "gradients": 0, "optimizer_state": optim, "activations": 6 * GiB},
            "optimizer_step": {"allocated": allocated, "parameters": params, "gradients": grads, "optimizer_state": optim, "activations": 0},
        },
        "highwater": {"parameters": params, "gradients": grads, "optimizer_state": optim, "activations": 6 * GiB},
        "sample_every": 8,
    }


def write_hook_run(root: Path, steps: int, name: str = "20261122-120000-long", close: bool = True, deltas: bool = True, index: bool = True) -> Path:
    """A run directory whose ``rank0.jsonl`` (and step index) the hook's writer wrote; ``close=False``
    leaves it as a crash would (the last stretch not in the index)."""
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    for old in run.glob("*.jsonl*"):
        old.unlink()  # the writer claims rank0.jsonl exclusively: a file left from before would push it to proc<pid>.jsonl
    write_meta(
        run,
        {
            "schema": SCHEMA_VERSION,
            "run_id": run.name,
            "command": ["python", "train.py", "--batch-size", "32"],
            "cwd": str(root),
            "started_at": 1_700_000_000.0,
            "ended_at": 1_700_000_000.0 + steps * 0.25,
            "exit_code": 0,
            "status": "finished",
            "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "total_bytes": 80 * GiB, "kind": "cuda"}],
            "detected_flags": [],
        },
    )
    rng = random.Random(0)
    spike = steps * 2 // 3
    writer = RankFileWriter(run, 0, step_index=index)
    if not deltas:
        from memtop.profiler.writers import RecordEncoder

        writer._encoder = RecordEncoder(deltas=False)
    for s in range(1, steps + 1):
        writer.put(hook_record(s, rng, spike))
        if s % 1000 == 0:
            writer.put({"type": "stage", "schema": SCHEMA_VERSION, "rank": 0, "time": 1.0, "name": "eval", "step": s, "duration": 0.5, "before": 1, "after": 2, "peak": 3, "measure": "cuda_allocated"})
    if close:
        writer.put({"type": "exit", "schema": SCHEMA_VERSION, "rank": 0, "time": 2.0, "reason": "normal", "exception": None, "steps": steps, "pid": 1, "hook_cpu_seconds": 0.5})
        writer.close()
    return run
