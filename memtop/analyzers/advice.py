"""The advisor: which change makes this run fit (or go faster), by how much, at what cost.

Every suggestion is computed from the run's own measured figures (the composition at both moments
of its peak step, fragmentation, growth) and names the exact change: the user's command line with
one of the script's *own* flags changed, an environment variable, or, where the script has no such
flag, what to change in code. The rules live in :mod:`memtop.analyzers.rules`.

``suggest(run)`` is what the dashboard calls on the records it has read so far; it never raises
for bad or partial input.
"""

from __future__ import annotations

from memtop.analyzers.facts import Facts, gather
from memtop.analyzers.rules import RULES
from memtop.analyzers.suggestion import CONFIDENCES, Suggestion
from memtop.runs.reader import RunData

__all__ = ["CONFIDENCES", "Suggestion", "suggest", "suggestions_for"]


def _order(s: Suggestion) -> tuple[int, float]:
    if s.saving_bytes is None:
        return (1, 0.0)
    return (0, -float(s.saving_bytes))


def suggest(run: RunData, detect_flags: bool = True) -> list[Suggestion]:
    """Suggestions for this run, largest saving first (changes that use memory for speed, with a
    negative saving, after those; unquantified ones last).

    ``detect_flags`` has no effect: flags come only from ``meta["detected_flags"]``; nothing is run.
    """
    return suggestions_for(gather(run, detect_flags_now=detect_flags))


def suggestions_for(facts: Facts) -> list[Suggestion]:
    """The rules applied to already gathered facts (the report shares them with the OOM analysis)."""
    out: list[Suggestion] = []
    for rule in RULES:
        out.extend(rule(facts))
    return sorted(out, key=_order)
