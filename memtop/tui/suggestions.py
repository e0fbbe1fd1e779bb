"""Bridge to the advisor (``memtop.analyzers.advice``): find it, call it rarely, never let it break the view.

Runs on the reader thread. The advisor is optional here: while it is not installed the panel says
so instead of pretending there is nothing to suggest.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import shlex
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
    if not callable(fn):
        return None
    try:
        takes_flag = "detect_flags" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_flag = False
    if takes_flag:
        # Never run the user's script (`--help`) from the dashboard: `memtop train` detects the
        # flags once, in the background, and records them in meta.json.
        return lambda run: fn(run, detect_flags=False)
    return fn


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


def _get(obj: Any, name: str) -> Any:
    value = getattr(obj, name, None)
    if value is None and isinstance(obj, dict):
        value = obj.get(name)
    return value


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, dict):
        return tuple((str(k), str(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple((str(p[0]), str(p[1])) for p in value if isinstance(p, (list, tuple)) and len(p) == 2)
    return ()


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
        command=tuple(str(a) for a in _get(item, "command")) if isinstance(_get(item, "command"), (list, tuple)) else None,
        env=_env(_get(item, "env")),
    )


_UNAVAILABLE = SuggestionsView("unavailable", message="no suggestions yet (the advisor is not installed)")


class SuggestionCache:
    """Calls the advisor at most every ``every`` seconds (and once more when the run ends)."""

    def __init__(
        self,
        suggest: SuggestFn | None | str,
        *,
        every: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._auto = suggest == "auto"
        """Find the advisor on first use (in the reader's thread: its import is not the UI's to pay)."""
        self._suggest: SuggestFn | None = suggest if callable(suggest) else None
        self._every = every
        self._monotonic = monotonic
        self._last_at: float | None = None
        self._last_input = -1
        self.view = SuggestionsView("pending")
        if self._suggest is None and not self._auto:
            self.view = _UNAVAILABLE

    def _resolve(self) -> None:
        if self._auto:
            self._auto = False
            self._suggest = load_advisor()
            if self._suggest is None:
                self.view = _UNAVAILABLE

    def due(self, input_version: int, force: bool = False) -> bool:
        self._resolve()
        if self._suggest is None or input_version == self._last_input:
            return False
        if force or self._last_at is None:
            return True
        return self._monotonic() - self._last_at >= self._every

    def update(self, input_version: int, build: Callable[[], RunData]) -> bool:
        """Recompute with the data ``build()`` returns; True when the view changed."""
        self._resolve()
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
