"""The child's output (``output.log``): its last lines, as many as fit.

A tail, not a scrollable log: the whole output is in ``output.log``, and a scrollable widget that
grows with every line makes the screen re-layout twice a second (measured: it was the one widget
that did). Drawn line by line (Textual's line API), cut to the width with an ellipsis.
"""

from __future__ import annotations

from collections import deque

from rich.segment import Segment
from textual.strip import Strip
from textual.widget import Widget

from memtop.tui.snapshot import RunSnapshot
from memtop.tui.widgets.panel import set_border

_MISSING = "(no output.log: only runs launched by `memtop train` record the child's output)"


class LogPanel(Widget):
    DEFAULT_CSS = """
    LogPanel { height: 8; }
    """

    def __init__(self, *, id: str | None = None, keep: int = 200) -> None:
        super().__init__(id=id)
        self._lines: deque[str] = deque(maxlen=keep)
        self._seen = 0
        self._missing = False
        set_border(self, title="Output")

    @property
    def lines(self) -> list[str]:
        return list(self._lines)

    def show(self, snap: RunSnapshot) -> None:
        if not snap.has_log:
            if not self._missing:
                self._missing = True
                self._lines.clear()
                self._lines.append(_MISSING)
                self.refresh()
            return
        if self._missing:
            self._missing = False
            self._lines.clear()
        new = snap.log_total - self._seen
        if new <= 0:
            return
        set_border(self, title=f"Output · {snap.log_total:,} lines")
        if new >= len(snap.log_lines):
            self._lines.clear()
            self._lines.extend(snap.log_lines)
        else:
            self._lines.extend(snap.log_lines[len(snap.log_lines) - new :])
        self._seen = snap.log_total
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.size.width, self.size.height
        first = max(0, len(self._lines) - height)
        index = first + y
        style = self.rich_style
        if index >= len(self._lines) or width <= 0:
            return Strip.blank(width, style)
        text = self._lines[index]
        if len(text) > width:
            text = text[: max(0, width - 1)] + "…"
        return Strip([Segment(text.ljust(width), style)], width)
