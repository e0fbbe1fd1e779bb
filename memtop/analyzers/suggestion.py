"""One piece of advice: the change, its estimated effect on the step's peak, what it costs.

Its own module so that the rules, the advisor and the renderers share it without importing each
other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONFIDENCES = ("high", "medium", "low")


@dataclass(frozen=True)
class Suggestion:
    rule: str  # stable id: "mixed_precision", "gradient_checkpointing", "batch_accumulation", …
    title: str  # one line: what to do
    reason: str  # the measured reason ("activations are 61% of the peak (9.8 GiB)")
    saving_bytes: int | None  # estimated fall of the step's peak; negative = it rises (for speed)
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
