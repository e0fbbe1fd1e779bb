"""The suggestions panel: what the advisor would change, each with its measured saving and the edit.

The change is shown as what differs from the run's own command (``add --amp``, ``--batch-size 32
→ 16``): the whole new command line rarely fits, and the difference is what a person has to read.
Clicking a suggestion copies the full new command line (or environment change) to the clipboard.
"""

from __future__ import annotations

import shlex

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from memtop.analyzers.cmdline import join
from memtop.tui.fmt import fmt_bytes
from memtop.tui.snapshot import SuggestionRow, SuggestionsView
from memtop.tui.suggestions import command_change
from memtop.tui.widgets.panel import set_border

_ACCENT = "#b48cff"
_WARN = "#ffb347"
_GOOD = "#4fd18b"


def short_change(row: SuggestionRow, command: tuple[str, ...]) -> str:
    """The change in the fewest words: a command-line diff, an env assignment, or the advisor's text."""
    bits: list[str] = []
    if row.env:
        bits.append(" ".join(f"{k}={v}" for k, v in row.env))
    if row.command is not None and command:
        diff = command_change(command, row.command)
        if diff:
            bits.append(diff)
    if not bits:
        return row.change.split("\n", 1)[0]  # a code snippet's first line; the tooltip has it all
    return "; ".join(bits)


def full_change(row: SuggestionRow) -> str:
    if row.command is not None:
        return join(row.command, dict(row.env))
    return row.change or " ".join(f"{k}={shlex.quote(v)}" for k, v in row.env)


def _clip(text: str, limit: int) -> str:
    """The first ``limit`` characters, cut at a word; the rest is in the tooltip."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip(" ,;:") + " …"


def render_suggestion(i: int, row: SuggestionRow, command: tuple[str, ...], *, compact: bool, limit: int = 110) -> Text:
    out = Text()
    out.append(f"{i}. ", "bold")
    if row.saving_bytes is not None and row.saving_bytes > 0:
        out.append(f"−{fmt_bytes(row.saving_bytes)} ", f"bold {_GOOD}")
    elif row.saving_bytes is not None and row.saving_bytes < 0:
        out.append(f"+{fmt_bytes(-row.saving_bytes)} ", f"bold {_WARN}")
    title = row.title or row.rule
    out.append(_clip(title, max(8, limit + 5 - out.cell_len)) if compact else title, "bold")
    if row.confidence and not compact:
        out.append(f" ({row.confidence})", "dim")
    change = short_change(row, command)
    if change:
        out.append("\n   → ", _ACCENT)
        out.append(_clip(change, limit), _ACCENT)
    if row.reason and not compact:
        out.append(f"\n   {_clip(row.reason, limit)}", "dim")
    if row.cost and not compact:
        out.append(f"\n   cost: {_clip(row.cost, limit // 2)}", "dim italic")
    return out


def describe(row: SuggestionRow) -> str:
    """Everything about one suggestion, for its tooltip."""
    parts = [row.title, row.reason]
    if row.change:
        parts.append(f"change: {row.change}")
    if row.cost:
        parts.append(f"cost: {row.cost}")
    if row.confidence:
        parts.append(f"confidence: {row.confidence}")
    return "\n".join(p for p in parts if p) + "\n(click to copy the change)"


class SuggestionItem(Static):
    """One suggestion; a click copies its full change."""

    DEFAULT_CSS = """
    SuggestionItem { margin-bottom: 1; }
    SuggestionItem:hover { background: $boost; }
    """

    def __init__(self, text: Text, copy: str, tooltip: str = "") -> None:
        super().__init__(text)
        self._text = text
        self._copy = copy
        if tooltip:
            self.tooltip = tooltip

    def set(self, text: Text, copy: str, tooltip: str) -> None:
        self._copy = copy
        if tooltip != self.tooltip:
            self.tooltip = tooltip or None
        if text != self._text:
            self._text = text
            self.update(text)

    def on_click(self, event: events.Click) -> None:
        if self._copy:
            self.app.copy_to_clipboard(self._copy)
            self.app.notify(self._copy, title="copied to the clipboard", timeout=4)


class AdvicePanel(VerticalScroll):
    DEFAULT_CSS = """
    AdvicePanel { height: 1fr; }
    AdvicePanel > Static { width: 1fr; }
    AdvicePanel.-compact SuggestionItem { margin-bottom: 0; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._notice = Static("computing suggestions…", classes="notice")
        self._shown: tuple[SuggestionsView, tuple[str, ...], tuple[str, ...], bool, int] | None = None
        self.compact = False
        self.can_focus = False

    def compose(self) -> ComposeResult:
        yield self._notice

    def on_resize(self, event: events.Resize) -> None:
        # Compact suggestions are clipped to the width: redo them when it changes.
        if self._shown is not None and self._shown[4] != self.size.width:
            view, warnings, command = self._shown[:3]
            self.show(view, warnings, command)

    def show(self, view: SuggestionsView, warnings: tuple[str, ...], command: tuple[str, ...]) -> None:
        key = (view, warnings, command, self.compact, self.size.width)
        if key == self._shown:
            return
        self._shown = key
        self.set_class(self.compact, "-compact")
        n = len(view.items)
        set_border(self, title=f"Suggestions · {n}" if n else "Suggestions")
        notice = Text()
        for w in warnings[-3:]:
            notice.append(f"⚠ {w}\n", _WARN)
        if view.state == "pending":
            notice.append("computing suggestions…", "dim italic")
        elif view.state == "error":
            notice.append(view.message, _WARN)
        elif not view.items:
            notice.append(view.message or "no suggestions yet", "dim italic")
        notice.rstrip()
        self._notice.update(notice)
        self._notice.display = bool(notice.plain)
        # In a small terminal every change fits on its line: one suggestion, two lines.
        limit = max(20, self.size.width - 7) if self.compact else 110
        rendered = [
            (render_suggestion(i, row, command, compact=self.compact, limit=limit), full_change(row), describe(row))
            for i, row in enumerate(view.items, 1)
        ]
        existing = list(self.query(SuggestionItem))
        if len(existing) == len(rendered):
            # Same number of suggestions (the usual case as a run goes on): update in place, no remount.
            for item, (text, copy, tip) in zip(existing, rendered, strict=True):
                item.set(text, copy, tip)
            return
        for old in existing:
            old.remove()
        if rendered:
            self.mount_all([SuggestionItem(text, copy, tip) for text, copy, tip in rendered])
