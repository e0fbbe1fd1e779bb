"""The leak rule: a category that keeps growing after warm-up is a tensor kept alive across steps."""

from __future__ import annotations

from memtop.analyzers.facts import Facts
from memtop.analyzers.suggestion import Suggestion
from memtop.units import fmt_bytes


def leak(f: Facts) -> list[Suggestion]:
    lk = f.leak
    if lk.verdict not in ("leak", "suspected") or lk.bytes_per_step is None:
        return []
    where = ", ".join(lk.growing_categories) or "memory outside the tracked tensors"
    tensors = ", ".join(t.name for t in lk.tensors[:3])
    reason = f"{where} grows by {fmt_bytes(lk.bytes_per_step)}/step after warm-up"
    if tensors:
        reason += f" (growing: {tensors})"
    if lk.steps_until_full is not None:
        reason += f"; the device is full in ≈{lk.steps_until_full} steps"
    return [
        Suggestion(
            "leak",
            "stop keeping tensors alive across steps",
            reason,
            lk.growth_bytes,
            "none",
            "in code: accumulate metrics with loss.item() or loss.detach(), not the loss tensor (which keeps its graph); "
            "clear lists of outputs each step; do not store tensors that require grad",
            "high" if lk.verdict == "leak" else "low",
            lk.growing_categories[0] if len(lk.growing_categories) == 1 else None,
            assumption="the growth measured after warm-up is what fixing the leak gives back by the end of this run",
        )
    ]
