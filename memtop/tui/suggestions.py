"""Bridge to the advisor (``memtop.analyzers.advice``): find it, call it rarely, never let it break the view.

Runs on the reader thread. The advisor is optional here: while it is not installed the panel says
so instead of pretending there is nothing to suggest.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from memtop.runs.reader import RunData
from memtop.tui.snapshot import SuggestionRow, SuggestionsView

SuggestFn = Callable[[RunData], Sequence[Any]]

MAX_SUGGESTIONS = 8


def load_advisor() -> SuggestFn | None:
    """``memtop.analyzers.advice.suggest`` if that module exists, else None."""
    try:
        module = importlib.import_module("memtop.analyzers.advice")
    except ImportError:
        return None
    fn = getattr(module, "suggest", None)
    return fn if callable(fn) else None


def _text(obj: Any, name: str) -> str:
    value = getattr(obj, name, None)
    if value is None and isinstance(obj, dict):
        value = obj.get(name)
    return "" if value is None else str(value)


def _int_or_none(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    if value is None and isinstance(obj, dict):
        value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def to_row(item: Any) -> SuggestionRow:
    """One advisor ``Suggestion`` (dataclass or dict) -> a frozen row the UI can show."""
    confidence = getattr(item, "confidence", None)
    if confidence is None and isinstance(item, dict):
        confidence = item.get("confidence")
    if isinstance(confidence, float):
        conf_text = f"{confidence:.0%}"
    else:
        conf_text = "" if confidence is None else str(confidence)
    return SuggestionRow(
        rule=_text(item, "rule"),
        title=_text(item, "title"),
        reason=_text(item, "reason"),
        saving_bytes=_int_or_none(item, "saving_bytes"),
        cost=_text(item, "cost"),
        change=_text(item, "change"),
        confidence=conf_text,
    )


class SuggestionCache:
    """Calls the advisor at most every ``every`` seconds (and once more when the run ends)."""

    def __init__(
        self,
        suggest: SuggestFn | None,
        *,
        every: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._suggest = suggest
        self._every = every
        self._monotonic = monotonic
        self._last_at: float | None = None
        self._last_input = -1
        self.view = SuggestionsView("pending") if suggest is not None else SuggestionsView(
            "unavailable", message="no suggestions yet (the advisor is not installed)"
        )

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
