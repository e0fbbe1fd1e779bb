"""The largest tensors of the last step (or at the OOM): what to look at first when one thing dominates."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from memtop.tui.fmt import fmt_bytes, shorten
from memtop.tui.snapshot import RankSnapshot, TensorRow
from memtop.tui.widgets.bars import CATEGORY_COLORS, CATEGORY_SHORT
from memtop.tui.widgets.columns import fit_columns
from memtop.tui.widgets.panel import set_border

_COLUMNS = ("tensor", "kind", "size", "shape", "dtype")
_NARROW_COLUMNS = ("tensor", "kind", "size")
_OTHER_COLUMNS_WIDTH = {_COLUMNS: 44, _NARROW_COLUMNS: 19}


class TensorTable(DataTable[Text]):
    DEFAULT_CSS = """
    TensorTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, show_cursor=False, zebra_stripes=True, cursor_type="none")
        self._rows: tuple[TensorRow, ...] = ()
        self._shown: tuple[tuple[TensorRow, ...], int, tuple[str, ...]] | None = None
        self._columns: tuple[str, ...] = ()
        self.narrow = False
        """Only name, kind and size (an 80-column terminal has no room for shape and dtype)."""

    def _name_width(self, columns: tuple[str, ...]) -> int:
        return max(12, self.size.width - _OTHER_COLUMNS_WIDTH[columns])

    def show(self, rank: RankSnapshot | None) -> None:
        rows: tuple[TensorRow, ...] = ()
        title = "Large tensors"
        if rank is not None and rank.oom is not None and rank.oom.large_tensors:
            rows = rank.oom.large_tensors
            title = "Large tensors at the OOM"
        elif rank is not None and rank.last is not None:
            rows = rank.last.large_tensors
        if rows:
            title += f" · top {len(rows)}, {fmt_bytes(sum(r.bytes for r in rows))}"
        set_border(self, title=title)
        self._rows = rows
        self._fill()

    def on_resize(self) -> None:
        self._fill()

    def _fill(self) -> None:
        columns = _NARROW_COLUMNS if self.narrow else _COLUMNS
        name_width = self._name_width(columns)
        if self._shown == (self._rows, name_width, columns):
            return
        self._shown = (self._rows, name_width, columns)
        if columns != self._columns:
            self.clear(columns=True)
            for col in columns:
                self.add_column(col, key=col)
            self._columns = columns
        else:
            self.clear()
        for i, r in enumerate(self._rows):
            cells = [
                Text(shorten(r.name, name_width)),
                Text(CATEGORY_SHORT.get(r.category, r.category), style=CATEGORY_COLORS.get(r.category, "")),
                Text(fmt_bytes(r.bytes), justify="right"),
            ]
            if columns is _COLUMNS:
                shape = "x".join(str(d) for d in r.shape) if r.shape else "–"
                cells += [Text(shape, style="dim"), Text(r.dtype, style="dim")]
            self.add_row(*cells, key=str(i))
        fit_columns(self)
