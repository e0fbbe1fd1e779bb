"""One row per rank (shown when a run has several): spot the rank that is different, click it to inspect."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from memtop.runs.recordfiles import short_label
from memtop.tui.fmt import fmt_bytes, fmt_count, fmt_pct, fmt_step_time
from memtop.tui.snapshot import RankSnapshot, RunSnapshot
from memtop.tui.widgets.bars import LEVEL_HIGH, level_color
from memtop.tui.widgets.columns import fit_columns

_COLUMNS = ("rank", "device", "step", "allocated", "reserved", "peak", "max peak", "used / total", "frag", "speed", "state")


class RankTable(DataTable[Text]):
    DEFAULT_CSS = """
    RankTable { height: auto; max-height: 10; }
    """

    class Chosen(Message):
        def __init__(self, rank: int) -> None:
            super().__init__()
            self.rank = rank

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._keys: list[int] = []

    def on_mount(self) -> None:
        for col in _COLUMNS:
            self.add_column(col, key=col)

    @staticmethod
    def _cells(r: RankSnapshot) -> list[Text]:
        last = r.last
        used = last.device_used if last else None
        total = last.device_total if last else None
        frac = used / total if used is not None and total else None
        state = Text("running", style="dim")
        if r.oom is not None:
            state = Text("OOM", style=f"bold {LEVEL_HIGH}")
        elif r.exit is not None:
            state = Text(f"exit: {r.exit.reason}", style="dim")
        return [
            Text(short_label(r.rank), style="bold"),
            Text(r.device),
            Text(fmt_count(last.step) if last else "–", justify="right"),
            Text(fmt_bytes(last.allocated) if last else "–", justify="right"),
            Text(fmt_bytes(last.reserved) if last else "–", justify="right"),
            Text(fmt_bytes(last.peak) if last else "–", justify="right"),
            Text(fmt_bytes(r.max_peak), justify="right"),
            Text(
                f"{fmt_bytes(used)} / {fmt_bytes(total)}" if used is not None else "n/a",
                style=level_color(frac) if frac is not None else "dim",
                justify="right",
            ),
            Text(fmt_pct(last.fragmentation_pct) if last else "–", justify="right"),
            Text(fmt_step_time(r.step_rate), justify="right"),
            state,
        ]

    def show(self, snap: RunSnapshot) -> None:
        keys = [r.rank for r in snap.ranks]
        if keys != self._keys:
            self.clear()
            for r in snap.ranks:
                self.add_row(*self._cells(r), key=str(r.rank))
            self._keys = keys
        else:
            for r in snap.ranks:
                for col, cell in zip(_COLUMNS, self._cells(r), strict=True):
                    self.update_cell(str(r.rank), col, cell)
        fit_columns(self)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.post_message(self.Chosen(int(event.row_key.value)))
