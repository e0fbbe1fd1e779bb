"""Why a run ran out of memory, and the smallest change that would have fitted.

From the ``oom`` record: what was asked, what the device had free, what was held and by which
category, and how much sat reserved but unused (fragmentation). The shortfall is what was missing;
the advisor's suggestions are then tried from the least invasive change to the most, and the first
whose estimated saving covers the shortfall is named. For a batch-size flag the smallest batch
reduction that covers it is computed exactly (activations scale with the batch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from memtop.analyzers import cmdline
from memtop.analyzers.facts import Facts
from memtop.analyzers.roles import int_value
from memtop.analyzers.rules import ALLOC_ENV, EXPANDABLE
from memtop.analyzers.suggestion import Suggestion
from memtop.analyzers.summary import large_tensors
from memtop.runs.records import LargeTensor
from memtop.units import fmt_bytes

# Least invasive first: an environment variable, then changes that keep the experiment the same,
# then ones that change numerics, then ones that change what is trained.
LEAST_INVASIVE = (
    "expandable_segments",
    "batch_accumulation",
    "mixed_precision",
    "half_precision",
    "gradient_checkpointing",
    "optimizer_state",
    "leak",
    "frames",
    "resolution",
    "smaller_batch",
    "lora",
)

_UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
_ASKED = re.compile(r"[Tt]ried to allocate ([\d.]+) ?([KMGT]i?B|B)")
_FREE = re.compile(r"of which ([\d.]+) ?([KMGT]i?B|B) is free")
_TOTAL = re.compile(r"total capacity of ([\d.]+) ?([KMGT]i?B|B)")


def _parse_size(m: re.Match[str] | None) -> int | None:
    if m is None:
        return None
    try:
        return int(float(m.group(1)) * _UNIT[m.group(2)])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class Held:
    category: str
    bytes: int | None
    percent: float | None  # of allocated


@dataclass(frozen=True)
class BatchChange:
    """The smallest batch reduction that covers the shortfall (activations scale with the batch)."""

    flag: str
    old: int
    new: int
    saving_bytes: int

    def to_json(self) -> dict[str, object]:
        return {"flag": self.flag, "from": self.old, "to": self.new, "saving_bytes": self.saving_bytes}


@dataclass(frozen=True)
class SizeFlag:
    """The script's integer flag that probably sets a too-large request's size."""

    flag: str
    value: int


@dataclass(frozen=True)
class OomReport:
    step: int | None
    rank: int | None
    device: str | None
    message: str
    requested_bytes: int | None
    device_free: int | None
    device_total: int | None
    allocated: int | None
    reserved: int | None
    reserved_unused: int | None  # reserved - allocated: cached, but no block large enough
    held: list[Held]
    large_tensors: tuple[LargeTensor, ...]
    shortfall_bytes: int | None  # what was missing (requested - free)
    fits_with: Suggestion | None  # the least invasive suggestion that covers the shortfall
    smallest_batch: BatchChange | None  # when computable
    explanation: str
    alternatives: list[str] = field(default_factory=list)
    request_too_large: bool = False  # the request alone exceeds the device (or all it could ever free)
    request_flag: SizeFlag | None = None  # the script flag that probably sets its size


def explain(facts: Facts, suggestions: list[Suggestion]) -> OomReport | None:
    rec = facts.oom
    if rec is None:
        return None
    message = rec.message
    requested = rec.requested_bytes or _parse_size(_ASKED.search(message))
    free = rec.device_free
    if free is None:
        free = _parse_size(_FREE.search(message))
    total = facts.device_total or _parse_size(_TOTAL.search(message))
    allocated = rec.allocated
    reserved = rec.reserved
    cats = rec.categories.as_dict()
    base = allocated or sum(v or 0 for v in cats.values()) or None
    held = [Held(c, v, (100.0 * v / base) if base and v is not None else None) for c, v in cats.items()]
    unused = (reserved - allocated) if reserved is not None and allocated is not None else None
    shortfall = max(0, requested - free) if requested is not None and free is not None else None
    held_bytes = allocated if allocated is not None else sum(h.bytes or 0 for h in held)
    common: dict[str, Any] = dict(
        step=rec.step,
        rank=rec.rank,
        device=rec.device,
        message=message.strip().splitlines()[0][:300] if message.strip() else "",
        requested_bytes=requested,
        device_free=free,
        device_total=total,
        allocated=allocated,
        reserved=reserved,
        reserved_unused=unused,
        held=held,
        large_tensors=large_tensors(rec)[:5],
        shortfall_bytes=shortfall,
    )
    if requested is not None and _too_large(requested, total, free, held_bytes, unused):
        flag = _size_flag(facts, requested)
        return OomReport(
            **common,
            fits_with=None,
            smallest_batch=None,
            explanation=_explain_too_large(requested, total, free, held_bytes, flag),
            request_too_large=True,
            request_flag=flag,
        )
    # what expandable segments could have used *at the failed allocation* is what sat reserved but
    # unused then, not the waste of earlier steps
    candidates = [x for x in suggestions if x.rule != "expandable_segments"]
    if unused:
        candidates.append(_expandable(facts, unused))
    fits, alternatives = _smallest_fit(candidates, shortfall)
    batch = _smallest_batch(facts, shortfall)
    return OomReport(
        **common,
        fits_with=fits,
        smallest_batch=batch,
        explanation=_explain(requested, free, held, unused, shortfall, fits, batch),
        alternatives=alternatives,
    )


DWARFS = 10  # a request this many times everything held (and more than could ever be freed) is the bug itself


def _too_large(requested: int, total: int | None, free: int | None, held: int, unused: int | None) -> bool:
    """The request alone exceeds the device, or dwarfs everything held and would not fit even
    with all of it freed: no saving of the run's memory can make it fit."""
    if total and requested > total:
        return True
    could_free = (free or 0) + held + (unused or 0)
    return free is not None and held > 0 and requested >= DWARFS * held and requested > could_free


def _size_flag(facts: Facts, requested: int) -> SizeFlag | None:
    """The script's integer flag that most probably sets the request's size: the largest value that
    divides its element count (for 1-, 2-, 4- and 8-byte elements)."""
    best: SizeFlag | None = None
    for entry in facts.flags:
        v = int_value(entry)
        if v is None or v < 2 or entry.kind != "int":
            continue
        if any(requested % size == 0 and (requested // size) % v == 0 for size in (1, 2, 4, 8)):
            if best is None or v > best.value:
                best = SizeFlag(entry.flag, v)
    return best


def _explain_too_large(requested: int, total: int | None, free: int | None, held: int, flag: SizeFlag | None) -> str:
    parts = [f"asked for one allocation of {fmt_bytes(requested)}"]
    if total:
        ratio = requested / total
        parts[0] += f", {ratio:,.0f}× the device's {fmt_bytes(total)}" if ratio >= 2 else f", more than the device's {fmt_bytes(total)}"
    elif free is not None:
        parts[0] += f" with {fmt_bytes(free)} free"
    parts.append(f"everything the run held was {fmt_bytes(held)}")
    parts.append("no saving can fit it: the request itself is the problem (a size computed wrongly, or a flag set too large)")
    if flag is not None:
        parts.append(f"its size is probably set by {flag.flag} {flag.value}")
    return "; ".join(parts)


def _expandable(facts: Facts, unused: int) -> Suggestion:
    env = {ALLOC_ENV: EXPANDABLE}
    return Suggestion(
        "expandable_segments",
        f"set {ALLOC_ENV}={EXPANDABLE}",
        f"{fmt_bytes(unused)} was reserved but unused when the allocation failed",
        unused,
        "none measurable in most runs",
        cmdline.join(facts.command, env),
        "medium",
        None,
        tuple(facts.command),
        env=tuple(env.items()),
        assumption="growing segments in place lets the allocator use the reserved-but-unused memory",
    )


def _smallest_fit(suggestions: list[Suggestion], shortfall: int | None) -> tuple[Suggestion | None, list[str]]:
    if shortfall is None:
        return None, []
    ranked = sorted(
        (s for s in suggestions if s.saving_bytes is not None and s.saving_bytes > 0 and s.rule in LEAST_INVASIVE),
        key=lambda s: LEAST_INVASIVE.index(s.rule),
    )
    fitting = [s for s in ranked if (s.saving_bytes or 0) >= shortfall]
    others = [f"{s.title} (≈{fmt_bytes(s.saving_bytes)})" for s in fitting[1:4]]
    return (fitting[0] if fitting else None), others


def _smallest_batch(facts: Facts, shortfall: int | None) -> BatchChange | None:
    bs = facts.roles.get("batch_size")
    batch = int_value(bs)
    a = facts.activations
    if bs is None or batch is None or batch < 2 or shortfall is None or a <= 0:
        return None
    per_sample = a / batch
    for new in range(batch - 1, 0, -1):
        saving = int(per_sample * (batch - new))
        if saving >= shortfall:
            return BatchChange(bs.flag, batch, new, saving)
    return None


def _explain(
    requested: int | None,
    free: int | None,
    held: list[Held],
    unused: int | None,
    shortfall: int | None,
    fits: Suggestion | None,
    batch: BatchChange | None,
) -> str:
    parts: list[str] = []
    if requested is not None:
        parts.append(f"asked for {fmt_bytes(requested)}" + (f" with {fmt_bytes(free)} free on the device" if free is not None else ""))
    known = [h for h in held if h.bytes]
    if known:
        top = max(known, key=lambda h: h.bytes or 0)
        parts.append(f"the largest holder was {top.category} ({fmt_bytes(top.bytes)})")
    if unused:
        parts.append(f"{fmt_bytes(unused)} sat reserved but unused (fragmentation)")
    if shortfall is not None:
        parts.append(f"{fmt_bytes(shortfall)} was missing")
    if fits is not None:
        parts.append(f"smallest change that fits: {fits.title} (≈{fmt_bytes(fits.saving_bytes)})")
    elif batch is not None:
        parts.append(f"smallest change that fits: {batch.flag} {batch.old} → {batch.new}")
    elif shortfall is not None:
        parts.append("no single suggestion covers it; combine the suggestions below")
    return "; ".join(parts) if parts else "out of memory (the record holds no figures)"
