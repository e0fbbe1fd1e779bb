"""``--device-memory SIZE`` of `memtop train`: parsed and checked here, applied by the hook
(memtop.profiler.device_cap) through ``MEMTOP_DEVICE_MEMORY``."""

from __future__ import annotations

import argparse
from typing import Any

from memtop.errors import MemtopError


def size_arg(text: str) -> int:
    from memtop.fitting.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_cap(cap: int, devices: list[dict[str, Any]]) -> None:
    """Refuse a cap on a machine without CUDA, or one larger than the card."""
    from memtop.units import fmt_bytes

    cuda = [d for d in devices if d.get("kind") == "cuda"]
    if not cuda:
        raise MemtopError("--device-memory caps CUDA memory, and this machine has no CUDA device")
    total = min(int(d["total_bytes"]) for d in cuda if isinstance(d.get("total_bytes"), int)) if any(isinstance(d.get("total_bytes"), int) for d in cuda) else None
    if total is not None and cap > total:
        raise MemtopError(f"--device-memory {fmt_bytes(cap)} is more than the card's {fmt_bytes(total)}")
