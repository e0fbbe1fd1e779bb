"""The advisor's rules, one module per family. Each rule takes the run's :class:`Facts` and returns
zero or more suggestions; a rule that does not apply to this run (this model, this optimizer, this
device) returns none.

Estimates are of the step's peak (:mod:`memtop.analyzers.whatif`) and each states what it assumes.
A rule uses one of the script's own flags only when a detected flag has the matching role;
otherwise its change says what to edit in code.
"""

from __future__ import annotations

from collections.abc import Callable

from memtop.analyzers.facts import Facts
from memtop.analyzers.rules.activations import (
    batch_accumulation,
    frames,
    gradient_checkpointing,
    mixed_precision,
    resolution,
    smaller_batch,
)
from memtop.analyzers.rules.allocator import ALLOC_ENV, EXPANDABLE, empty_cache, expandable_segments
from memtop.analyzers.rules.growth import leak
from memtop.analyzers.rules.model_state import half_precision, lora, optimizer_state
from memtop.analyzers.rules.speed import costly_saving_off, headroom
from memtop.analyzers.suggestion import Suggestion

Rule = Callable[[Facts], list[Suggestion]]

RULES: list[Rule] = [
    mixed_precision,
    gradient_checkpointing,
    batch_accumulation,
    smaller_batch,
    half_precision,
    optimizer_state,
    lora,
    frames,
    resolution,
    expandable_segments,
    empty_cache,
    leak,
    headroom,
    costly_saving_off,
]

__all__ = ["ALLOC_ENV", "EXPANDABLE", "RULES", "Rule"]
