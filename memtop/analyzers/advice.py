"""The advisor: which change makes this run fit (or go faster), by how much, at what cost.

Every suggestion is computed from the run's own measured figures (the composition at its peak,
fragmentation, growth) and names the exact change: the user's command line with one of the
script's *own* flags changed, an environment variable, or, where the script has no such flag,
what to change in code. The rules live in :mod:`memtop.analyzers.rules`.

``suggest(run)`` is what the dashboard calls on the records it has read so far; it never raises
for bad or partial input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memtop.runs.reader import RunData

if TYPE_CHECKING:
    from memtop.analyzers.facts import Facts

CONFIDENCES = ("high", "medium", "low")


@dataclass(frozen=True)
class Suggestion:
    rule: str  # stable id: "mixed_precision", "gradient_checkpointing", "batch_accumulation", …
    title: str  # one line: what to do
    reason: str  # the measured reason ("activations are 61% of the peak (9.8 GiB)")
    saving_bytes: int | None  # estimated bytes saved at the peak; negative = uses more (for speed)
    cost: str  # what it costs ("steps ≈30% slower")
    change: str  # the exact new command line, environment change, or code change
    confidence: str  # "high", "medium", "low"
    category: str | None = None  # the category the saving comes out of (None: several / the allocator)
    command: tuple[str, ...] | None = None  # the new argv, when the change is a command-line change
    env: tuple[tuple[str, str], ...] = field(default=())  # environment variables to set
    assumption: str = ""  # what the estimate assumes

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "title": self.title,
            "reason": self.reason,
            "saving_bytes": self.saving_bytes,
            "cost": self.cost,
            "change": self.change,
            "confidence": self.confidence,
            "category": self.category,
            "command": list(self.command) if self.command is not None else None,
            "env": dict(self.env),
            "assumption": self.assumption,
        }


def _order(s: Suggestion) -> tuple[int, float]:
    if s.saving_bytes is None:
        return (1, 0.0)
    return (0, -float(s.saving_bytes))


def suggest(run: RunData, detect_flags: bool = True) -> list[Suggestion]:
    """Suggestions for this run, largest saving first (changes that use memory for speed, with a
    negative saving, after those; unquantified ones last).

    ``detect_flags`` has no effect: flags come only from ``meta["detected_flags"]``; nothing is run.
    """
    from memtop.analyzers.facts import gather

    return suggestions_for(gather(run, detect_flags_now=detect_flags))


def suggestions_for(facts: Facts) -> list[Suggestion]:
    """The rules applied to already gathered facts (the report shares them with the OOM analysis)."""
    from memtop.analyzers.rules import RULES

    out: list[Suggestion] = []
    for rule in RULES:
        out.extend(rule(facts))
    return sorted(out, key=_order)
