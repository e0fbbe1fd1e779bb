"""The advisor in the dashboard: call ``memtop.analyzers.advice.suggest`` rarely, never let it break the view.

Runs on the reader thread. The dashboard never reads the user's script: flags come only from what
``memtop train`` stored in meta.json at launch (``detect_flags=False``).
"""

from __future__ import annotations

import difflib
import shlex
import time
from collections.abc import Callable, Sequence

from memtop.analyzers.suggestion import Suggestion
from memtop.runs.reader import RunData
from memtop.tui.snapshot import SuggestionRow, SuggestionsView

SuggestFn = Callable[[RunData], Sequence[Suggestion]]

MAX_SUGGESTIONS = 8


def dashboard_suggest(run: RunData) -> list[Suggestion]:
    """The advisor on the records read so far (imported on first use, in the reader's thread)."""
    from memtop.analyzers.advice import suggest

    return suggest(run, detect_flags=False)


def command_change(old: Sequence[str], new: Sequence[str]) -> str:
    """What differs between two argvs, as a person would say it: ``add --amp``, ``--batch-size 32 → 16``."""
    parts: list[str] = []
    matcher = difflib.SequenceMatcher(a=list(old), b=list(new), autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "insert":
            parts.append("add " + shlex.join(new[b0:b1]))
        elif op == "delete":
            parts.append("drop " + shlex.join(old[a0:a1]))
        elif op == "replace":
            # Show the flag a changed value belongs to.
            lead = old[a0 - 1] if a0 > 0 and old[a0 - 1].startswith("-") and a1 - a0 == 1 else ""
            before = shlex.join(old[a0:a1])
            after = shlex.join(new[b0:b1])
            parts.append(f"{lead + ' ' if lead else ''}{before} → {after}")
    return ", ".join(parts)


def to_row(item: Suggestion) -> SuggestionRow:
    """One advisor ``Suggestion`` -> a frozen row the UI can show."""
    return SuggestionRow(
        rule=item.rule,
        title=item.title,
        reason=item.reason,
        saving_bytes=item.saving_bytes,
        cost=item.cost,
        change=item.change,
        confidence=item.confidence,
        command=item.command,
        env=item.env,
    )


_UNAVAILABLE = SuggestionsView("unavailable", message="no suggestions (the advisor is switched off)")


class SuggestionCache:
    """Calls the advisor at most every ``every`` seconds (and once more when the run ends)."""

    def __init__(
        self,
        suggest: SuggestFn | None | str,
        *,
        every: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``suggest="auto"``: the advisor (:func:`dashboard_suggest`); None: no advisor (tests)."""
        self._suggest: SuggestFn | None = dashboard_suggest if suggest == "auto" else (suggest if callable(suggest) else None)
        self._every = every
        self._monotonic = monotonic
        self._last_at: float | None = None
        self._last_input = -1
        self.view = SuggestionsView("pending") if self._suggest is not None else _UNAVAILABLE

    def due(self, input_version: int, force: bool = False) -> bool:
        if self._suggest is None or input_version == self._last_input:
            return False
        if force or self._last_at is None:
            return True
        return self._monotonic() - self._last_at >= self._every

    def update(self, input_version: int, build: Callable[[], RunData]) -> bool:
        """Recompute with the data ``build()`` returns; True when the view changed."""
        if self._suggest is None:
            return False
        self._last_at = self._monotonic()
        self._last_input = input_version
        try:
            items = list(self._suggest(build()))
        except Exception as exc:  # noqa: BLE001 -- the advisor is another module's code; the view must survive it
            view = SuggestionsView("error", message=f"advisor failed: {type(exc).__name__}: {exc}")
        else:
            rows = tuple(to_row(i) for i in items[:MAX_SUGGESTIONS])
            view = SuggestionsView("ok", rows, message="" if rows else "nothing to change: no rule fired on this run")
        changed = view != self.view
        self.view = view
        return changed
