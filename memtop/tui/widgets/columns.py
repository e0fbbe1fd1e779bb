"""Table columns sized to their cells at once, not at the table's next idle."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable


def fit_columns(table: DataTable[Text]) -> None:
    """Size every auto-width column to its widest cell (or its header) now.

    A DataTable measures new rows and changed cells on its next idle. A modal screen pushed before
    that idle (the quit confirmation) left the table behind it drawn with header-wide columns, every
    cell cut to its header's width (a CI snapshot of the dashboard). Sized here, every frame drawn
    after the cells change is right; the table's own measuring on idle comes to the same widths.
    """
    for key, column in table.columns.items():
        if not column.auto_width:
            continue
        widest = column.label.cell_len
        for row in table.rows:
            widest = max(widest, table.get_cell(row, key).cell_len)
        column.content_width = widest
    table.refresh()
