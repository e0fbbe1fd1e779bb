"""What reading the CUDA allocator's figures costs on the CPU: torch's public API against the read
memtop's CUDA backend does (``memtop.profiler.backends.raw_stats_reader``).

``torch.cuda.memory_allocated``, ``max_memory_allocated`` and ``memory_reserved`` each call
``torch.cuda.memory_stats``, which takes the allocator's nested statistics (one C++ call,
``torch._C._cuda_memoryStats``) and flattens them into sorted dotted keys in Python. This runs
torch's own ``memory_stats`` code on a CPU machine by giving it, in place of the C++ call, a nested
dict of the allocator's layout (~130 figures), and times per call:

- ``torch.cuda.memory_allocated``: the source, then torch's flattening (what memtop paid per read
  before, up to six times a step);
- memtop's read: the source, then ``allocator_figures`` on the nested dict (what it pays now, twice a step);
- the source alone (a stand-in for the C++ call, which both pay).

Usage: ``python benchmarks/cuda_stats_cost.py [--calls 5000]`` (no GPU needed; hot loop, medians of 5 rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch.cuda.memory as cuda_memory

from memtop.profiler.backends import allocator_figures

STATS = ("allocated", "allocated_bytes", "segment", "reserved_bytes", "active", "active_bytes", "inactive_split", "inactive_split_bytes", "requested_bytes")
COUNTERS = ("num_alloc_retries", "num_ooms", "num_sync_all_streams", "num_device_alloc", "num_device_free", "max_split_size")


def nested_stats(device: Any = None) -> dict[str, Any]:
    """A nested dict of the caching allocator's layout (torch.cuda.memory_stats documents it)."""
    nested: dict[str, Any] = {s: {p: {m: 123456789 for m in ("current", "peak", "allocated", "freed")} for p in ("all", "large_pool", "small_pool")} for s in STATS}
    for k in ("oversize_allocations", "oversize_segments"):
        nested[k] = {m: 1 for m in ("current", "peak", "allocated", "freed")}
    for k in COUNTERS:
        nested[k] = 0
    return nested


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    runs = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter_ns() - t0) / calls / 1e3)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    original = cuda_memory.memory_stats_as_nested_dict
    cuda_memory.memory_stats_as_nested_dict = nested_stats  # type: ignore[assignment]  # torch's flattening, fed without a device
    try:
        flattened = cuda_memory.memory_stats(0)
        assert flattened["allocated_bytes.all.current"] == allocator_figures(nested_stats())[0]
        result = {
            "torch.cuda.memory_allocated (us)": per_call_us(lambda: cuda_memory.memory_allocated(0), args.calls),
            "memtop's read: allocator_figures (us)": per_call_us(lambda: allocator_figures(nested_stats()), args.calls),
            "the nested dict alone, a stand-in for the C++ call (us)": per_call_us(nested_stats, args.calls),
        }
    finally:
        cuda_memory.memory_stats_as_nested_dict = original
    print(json.dumps({k: round(v, 2) for k, v in result.items()}, indent=1))
    return result


if __name__ == "__main__":
    main()
