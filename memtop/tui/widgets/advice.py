"""The suggestions panel: what the advisor would change, each with its measured saving and the exact edit."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from memtop.tui.fmt import fmt_bytes
from memtop.tui.snapshot import SuggestionsView

_ACCENT = "#b48cff"
_WARN = "#ffb347"


def render_suggestions(view: SuggestionsView, warnings: tuple[str, ...] = (), *, compact: bool = False) -> Text:
    out = Text()
    for w in warnings[-3:]:
        out.append("⚠ ", _WARN)
        out.append(w + "\n", _WARN)
    if view.state == "pending":
        out.append("computing suggestions…", "dim italic")
        return out
    if view.state in ("unavailable", "error") or not view.items:
        out.append(view.message or "no suggestions yet", "dim italic" if view.state != "error" else _WARN)
        return out
    for i, s in enumerate(view.items, 1):
        if i > 1 and not compact:
            out.append("\n")
        out.append(f"{i}. ", "bold")
        out.append(s.title or s.rule, "bold")
        if s.saving_bytes:
            out.append(f"  saves ≈{fmt_bytes(s.saving_bytes)}", "bold #4fd18b")
        if s.confidence:
            out.append(f"  ({s.confidence})", "dim")
        out.append("\n")
        if s.reason and not compact:
            out.append(f"   {s.reason}\n", "dim")
        if s.change:
            out.append("   → ", _ACCENT)
            out.append(f"{s.change}\n", _ACCENT)
        if s.cost and not compact:
            out.append(f"   cost: {s.cost}\n", "dim")
    out.rstrip()
    return out


class AdvicePanel(VerticalScroll):
    DEFAULT_CSS = """
    AdvicePanel { height: 1fr; }
    AdvicePanel > Static { width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._body = Static("computing suggestions…", markup=False)
        self._shown: tuple[SuggestionsView, tuple[str, ...], bool] | None = None
        self.compact = False
        self.can_focus = False

    def compose(self):  # type: ignore[no-untyped-def]
        yield self._body

    def show(self, view: SuggestionsView, warnings: tuple[str, ...]) -> None:
        key = (view, warnings, self.compact)
        if key == self._shown:
            return
        self._shown = key
        n = len(view.items)
        self.border_title = f"Suggestions · {n}" if n else "Suggestions"
        self._body.update(render_suggestions(view, warnings, compact=self.compact))
