"""Rules about the CUDA caching allocator: expandable segments against fragmentation, and how
often the script empties the cache. Silent on CPU, which has no allocator counters."""

from __future__ import annotations

import re

from memtop.analyzers import cmdline
from memtop.analyzers.facts import Facts
from memtop.analyzers.flags import FlagEntry
from memtop.analyzers.rules.common import PLENTIFUL, MiB, cmd
from memtop.analyzers.series import median
from memtop.analyzers.suggestion import Suggestion
from memtop.units import fmt_bytes, fmt_pct

ALLOC_ENV = "PYTORCH_CUDA_ALLOC_CONF"
EXPANDABLE = "expandable_segments:True"


def expandable_segments(f: Facts) -> list[Suggestion]:
    fr = f.frag
    if not fr.measurable or fr.expandable_segments_saving is None or fr.verdict == "low":
        return []
    saving = fr.expandable_segments_saving
    if saving < max(64 * MiB, int(0.02 * (fr.reserved_max or 0))):
        return []
    change, argv = cmd(f, list(f.args), {ALLOC_ENV: EXPANDABLE})
    if fr.saving_basis == "reserved_minus_peak":
        reason = (
            f"{fmt_bytes(saving)} was reserved beyond the step's live peak at the most reserved step "
            f"(median {fmt_pct(fr.waste_pct_median)} of reserved); fragmentation {fmt_pct(fr.percent_mean)} on average, {fr.trend or 'flat'}"
        )
        assumption = "expandable segments bring reserved memory down to about the live peak"
    else:
        reason = f"{fmt_bytes(saving)} sat in split free blocks at the most reserved step; fragmentation {fmt_pct(fr.percent_mean)} on average"
        assumption = "expandable segments make the split free blocks usable"
    return [
        Suggestion(
            "expandable_segments",
            f"set {ALLOC_ENV}={EXPANDABLE}",
            reason,
            saving,
            "none measurable in most runs; not compatible with CUDA IPC of allocator blocks",
            change,
            "medium",
            None,
            argv,
            env=((ALLOC_ENV, EXPANDABLE),),
            assumption=assumption,
        )
    ]


_EVERY_STEP = re.compile(r"every (single )?step|each step|always")
_NEVER = re.compile(r"never|off|disabled|no empty_cache")


def cache_policy(entry: FlagEntry) -> dict[str, int]:
    """How often each choice of an empty_cache flag releases the cache, from its help text.

    ``"aggressive = never + …, normal = every 100 steps, minimal = every step"`` →
    ``{"aggressive": 0, "normal": 1, "minimal": 2}`` (0 never, 1 sometimes, 2 every step).
    Choices the help does not describe are left out.
    """
    text = str(entry.help or "").lower()
    out: dict[str, int] = {}
    for choice in entry.choices or []:
        m = re.search(rf"\b{re.escape(str(choice).lower())}\s*[=:]\s*([^,;]+)", text)
        if not m:
            continue
        desc = m.group(1)
        out[str(choice)] = 2 if _EVERY_STEP.search(desc) else 0 if _NEVER.search(desc) else 1
    return out


def empty_cache(f: Facts) -> list[Suggestion]:
    """empty_cache() every step costs time and only helps when memory is tight; never calling it
    lets fragmentation build up in a long run."""
    fr = f.frag
    if not fr.measurable:
        return []
    steps = max(1, f.info.steps)
    frequent = fr.cache_releases >= max(3, steps // 4)
    ec = f.roles.get("empty_cache")
    policy = cache_policy(ec) if ec is not None and ec.kind == "choice" else {}
    current = policy.get(str(ec.value)) if ec is not None else None
    held = median_fragmentation(f)
    if ec is not None and policy and current is not None:
        target: str | None = None
        if current == 2 and fr.verdict == "low" and f.device_total and f.level <= PLENTIFUL * f.device_total:
            target = next((c for c, v in policy.items() if v == 1), None)
        elif current == 0 and fr.verdict in ("high", "moderate"):
            target = next((c for c, v in policy.items() if v == 1), None) or next((c for c, v in policy.items() if v == 2), None)
        if target is None:
            return []
        change, argv = cmd(f, cmdline.set_value(f.args, ec, target))
        releasing = policy[target] > current
        return [
            Suggestion(
                "empty_cache",
                f"{ec.flag} {ec.value} → {target}",
                f"the cache was released {fr.cache_releases} times in {steps} steps; {fmt_bytes(held)} sits reserved but unused at step ends (median)",
                held if releasing else (-held if held is not None else None),
                "slower steps where the cache is released (allocations go back to the driver)" if releasing else "faster steps; that memory stays reserved",
                change,
                "low",
                None,
                argv,
                assumption="releasing the cache returns what is reserved but unused at the end of a step",
            )
        ]
    if frequent and fr.verdict == "low":
        return [
            Suggestion(
                "empty_cache",
                "call torch.cuda.empty_cache() less often",
                f"reserved memory was released {fr.cache_releases} times in {steps} steps while only {fmt_pct(fr.waste_pct_median)} of it is wasted",
                -held if held is not None else None,
                "none; each release makes the next step allocate from the driver again (slower steps)",
                "in code: call torch.cuda.empty_cache() only between phases (e.g. before evaluation), not every step",
                "low",
            )
        ]
    return []


def median_fragmentation(f: Facts) -> int | None:
    values = [v for s in f.series.values() for v in s.fragmentation_bytes if v is not None]
    m = median([float(v) for v in values])
    return int(m) if m is not None else None
