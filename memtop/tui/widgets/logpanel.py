"""The child's output (``output.log``), tail-following, appended to rather than redrawn."""

from __future__ import annotations

from textual.widgets import Log

from memtop.tui.snapshot import RunSnapshot


class LogPanel(Log):
    DEFAULT_CSS = """
    LogPanel { height: 8; }
    """

    def __init__(self, *, id: str | None = None, max_lines: int = 1000) -> None:
        super().__init__(id=id, max_lines=max_lines, auto_scroll=True)
        self._seen = 0
        self._said_missing = False
        self.border_title = "Output"

    def show(self, snap: RunSnapshot) -> None:
        if not snap.has_log:
            if not self._said_missing:
                self._said_missing = True
                self.write_line("(no output.log: only runs launched by `memtop train` record the child's output)")
            return
        if self._said_missing:
            self._said_missing = False
            self.clear()
        new = snap.log_total - self._seen
        if new <= 0:
            return
        self.border_title = f"Output · {snap.log_total:,} lines"
        if new > len(snap.log_lines):
            self.clear()
            lines = snap.log_lines
        else:
            lines = snap.log_lines[len(snap.log_lines) - new :]
        self._seen = snap.log_total
        self.write_lines(lines)
