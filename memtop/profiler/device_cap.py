"""``memtop train --device-memory SIZE``: cap this process's CUDA memory to act as a smaller card.

`memtop train` passes the cap in ``MEMTOP_DEVICE_MEMORY`` (bytes); right after ``import torch``
the hook turns it into ``torch.cuda.set_per_process_memory_fraction`` for the device this process
trains on (``LOCAL_RANK`` under torchrun, else device 0). The caching allocator then raises the
usual out-of-memory error at the cap, which the hook records like any other OOM. Doing this creates
the CUDA context at import, which a training process does moments later anyway.
"""

from __future__ import annotations

import os
import sys
from typing import Any

ENV_DEVICE_MEMORY = "MEMTOP_DEVICE_MEMORY"


def requested_cap() -> int | None:
    raw = os.environ.get(ENV_DEVICE_MEMORY, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def fraction_for(cap: int, total: int) -> float:
    """The share of ``total`` that is ``cap`` bytes (at most 1)."""
    return min(1.0, cap / total) if total > 0 else 1.0


def apply_from_env(torch: Any) -> float | None:
    """Apply the cap if one was asked for; returns the fraction set (None when none was)."""
    cap = requested_cap()
    if cap is None:
        return None
    if not torch.cuda.is_available():
        sys.stderr.write("memtop: --device-memory has no effect: this process sees no CUDA device\n")
        return None
    count = torch.cuda.device_count()
    device = int(os.environ.get("LOCAL_RANK", "0") or 0) % max(1, count)
    total = int(torch.cuda.get_device_properties(device).total_memory)
    fraction = fraction_for(cap, total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction
