"""Write synthetic but format-exact run directories for tests of readers, analyzers and the TUI.

The figures obey the identities of docs/run-format.md (categories sum to peak on CUDA, allocated +
fragmentation == reserved). Real profiled runs come from the sample runs; this is for shapes a
CPU-only test machine cannot produce (CUDA figures, several ranks, OOM, leaks).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memtop.runs.format import SCHEMA_VERSION, rank_file_name
from memtop.runs.rundir import write_meta

MiB = 1024 * 1024
GiB = 1024 * MiB


def step_record(
    step: int,
    *,
    rank: int = 0,
    device: str = "cuda:0",
    t0: float = 1_700_000_000.0,
    step_time: float = 0.25,
    parameters: int = 2 * GiB,
    gradients: int = 2 * GiB,
    optimizer_state: int = 4 * GiB,
    activations: int = 6 * GiB,
    other: int = 512 * MiB,
    fragmentation: int = 300 * MiB,
    device_total: int = 80 * GiB,
) -> dict[str, Any]:
    cuda = device.startswith("cuda")
    tracked = parameters + gradients + optimizer_state + activations
    peak = tracked + other if cuda else None
    allocated = parameters + gradients + optimizer_state + other // 4 if cuda else None
    reserved = (peak or 0) + fragmentation if cuda else None
    frag_bytes = (reserved - allocated) if cuda and reserved is not None and allocated is not None else None
    rec: dict[str, Any] = {
        "type": "step",
        "schema": SCHEMA_VERSION,
        "step": step,
        "time": t0 + step * step_time,
        "rank": rank,
        "device": device,
        "step_time": step_time if step > 1 else None,
        "allocated": allocated,
        "reserved": reserved,
        "peak": peak,
        "categories": {
            "parameters": parameters,
            "gradients": gradients,
            "optimizer_state": optimizer_state,
            "activations": activations,
            "other": other if cuda else None,
        },
        "peak_point": "forward_end",
        "activations_step": step,
        "tracked": tracked,
        "fragmentation_bytes": frag_bytes,
        "fragmentation_pct": (100.0 * frag_bytes / reserved) if cuda and reserved and frag_bytes is not None else None,
        "inactive_split_bytes": fragmentation // 2 if cuda else None,
        "device_used": (reserved or 0) + 600 * MiB if cuda else tracked + 300 * MiB,
        "device_total": device_total,
        "large_tensors": [
            {"name": "model.embed.weight", "category": "parameters", "bytes": parameters // 4, "shape": [32000, 4096], "dtype": "torch.float32"},
            {"name": "optimizer.state[model.embed.weight].exp_avg", "category": "optimizer_state", "bytes": parameters // 4, "shape": [32000, 4096], "dtype": "torch.float32"},
            {"name": "saved[SoftmaxBackward0].result", "category": "activations", "bytes": activations // 8, "shape": [8, 32, 1024, 1024], "dtype": "torch.float32"},
        ],
        "sample_every": 1,
    }
    return rec


def make_run(
    runs_dir: Path,
    run_id: str = "20261122-120000-synthetic",
    *,
    steps: int = 50,
    ranks: int = 1,
    device: str = "cuda:0",
    command: list[str] | None = None,
    exit_code: int | None = 0,
    status: str = "finished",
    per_step: Callable[[int, int], dict[str, Any]] | None = None,
    extra_records: list[dict[str, Any]] | None = None,
    t0: float = 1_700_000_000.0,
) -> Path:
    """Create a run dir; ``per_step(step, rank)`` may override keyword figures of step_record."""
    run = runs_dir / run_id
    run.mkdir(parents=True, exist_ok=True)
    write_meta(
        run,
        {
            "schema": SCHEMA_VERSION,
            "run_id": run_id,
            "command": command or ["python", "train.py", "--batch-size", "32"],
            "cwd": str(runs_dir),
            "started_at": t0,
            "ended_at": None if exit_code is None else t0 + steps * 0.25 + 1,
            "exit_code": exit_code,
            "status": status,
            "memtop_version": "0.1.0",
            "torch_version": "2.13.0",
            "python_version": "3.11.7",
            "host": "testhost",
            "pid": 1,
            "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "total_bytes": 80 * GiB, "kind": "cuda"}]
            if device.startswith("cuda")
            else [{"index": None, "name": "Test CPU", "total_bytes": 24 * GiB, "kind": "cpu"}],
            "detected_flags": [],
        },
    )
    for rank in range(ranks):
        dev = f"cuda:{rank}" if device.startswith("cuda") else device
        with open(run / rank_file_name(rank), "w", encoding="utf-8") as fh:
            for s in range(1, steps + 1):
                kwargs = per_step(s, rank) if per_step else {}
                fh.write(json.dumps(step_record(s, rank=rank, device=dev, t0=t0, **kwargs)) + "\n")
            for rec in extra_records or []:
                if rec.get("rank", 0) == rank:
                    fh.write(json.dumps(rec) + "\n")
    return run
