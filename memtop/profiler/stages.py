"""``memtop.stage("name")``: memory before and after a pipeline stage and the peak within it.

On CUDA the allocator's counters (the step's own peak is kept across the reset the stage needs);
on a CPU the resident set size and its high-water mark.
"""

from __future__ import annotations

import time
from typing import Any

from memtop.profiler.backends import Backend, peak_rss_bytes, rss_bytes


def begin(backend: Backend | None) -> dict[str, Any]:
    cuda = backend is not None and backend.device.type == "cuda"
    ctx: dict[str, Any] = {"t0": time.perf_counter(), "cuda": cuda}
    if cuda and backend is not None:
        ctx["carry_peak"] = backend.take_peak()
        ctx["before"] = backend.allocated()
    else:
        ctx["before"] = rss_bytes()
        ctx["maxrss"] = peak_rss_bytes()
    return ctx


def end(backend: Backend, ctx: dict[str, Any]) -> dict[str, Any]:
    """The stage record's own fields (``duration``, ``before``, ``after``, ``peak``, ``measure``)."""
    duration = time.perf_counter() - ctx["t0"]
    if ctx["cuda"]:
        after = backend.allocated()
        peak = backend.take_peak()
        carry = ctx.get("carry_peak")
        if carry is not None and peak is not None:
            # keep the step's own peak intact across the reset the stage needed
            backend.carry_peak(max(carry, peak))
        measure = "cuda_allocated"
    else:
        after = rss_bytes()
        maxrss_after = peak_rss_bytes()
        before_max = ctx.get("maxrss")
        rose = maxrss_after is not None and before_max is not None and maxrss_after > before_max
        # Linux updates the high-water mark lazily, so it may trail the RSS just read
        peak = max(maxrss_after, after or 0, ctx["before"] or 0) if rose and maxrss_after is not None else None
        measure = "rss"
    return {"duration": duration, "before": ctx["before"], "after": after, "peak": peak, "measure": measure}
