"""Where the memory is: the five categories at the last step's peak (or at the OOM) as one stacked bar."""

from __future__ import annotations

from rich.text import Text

from memtop.runs.format import CATEGORIES
from memtop.tui.fmt import fmt_bytes, fmt_bytes_short, fmt_count
from memtop.tui.snapshot import RankSnapshot
from memtop.tui.widgets.bars import CATEGORY_COLORS, CATEGORY_LABELS, CATEGORY_SHORT, EMPTY, stacked_bar
from memtop.tui.widgets.panel import TextPanel, set_border

_POINT = {"forward_end": "end of forward", "optimizer_step": "optimizer step"}


class CategoryBar(TextPanel):
    DEFAULT_CSS = """
    CategoryBar { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rank: RankSnapshot | None = None
        self.compact = False

    def show(self, rank: RankSnapshot | None) -> None:
        self._rank = rank
        title = "Breakdown"
        if rank is not None and rank.oom is not None:
            title = "At OOM" + (f" · step {fmt_count(rank.oom.step)}" if rank.oom.step is not None else "")
        elif rank is not None and rank.last is not None:
            # No step number here (the header has it): a title that changes every step repaints the panel.
            title = "At the step's peak"
            if self.compact:
                peak = rank.last.peak if rank.last.peak is not None else rank.last.tracked
                title = f"At peak {fmt_bytes(peak)}"
        set_border(self, title=title)
        self.changed()

    def _highwater(self) -> dict[str, int]:
        """Each category's largest value within the last step, where it exceeds the peak moment's."""
        rank = self._rank
        last = rank.last if rank is not None and rank.oom is None else None
        if last is None:
            return {}
        return {n: v for n, v in last.highwater if v is not None and v > (last.category(n) or 0)}

    def _figures(self) -> tuple[list[tuple[str, int | None]], int | None, str]:
        rank = self._rank
        if rank is None:
            return [], None, ""
        if rank.oom is not None:
            cats = list(rank.oom.categories)
            return cats, rank.oom.allocated, ""
        last = rank.last
        if last is None:
            return [], None, ""
        note = _POINT.get(last.peak_point or "", last.peak_point or "")
        if last.activations_step is not None and last.activations_step != last.step:
            note += f"; activations from step {fmt_count(last.activations_step)}"
        return list(last.categories), last.peak, note

    def build(self, width: int) -> Text:
        width = max(10, width)
        cats, total, note = self._figures()
        if not cats:
            return Text("waiting for the first step record…", style="dim italic")
        known = {name: value for name, value in cats if value is not None}
        tracked = sum(known.values())
        bar_total = float(total) if total else float(tracked)
        out = Text()
        if not self.compact:
            at_oom = self._rank is not None and self._rank.oom is not None
            out.append("allocated " if at_oom else ("peak " if total is not None else "tracked "), "dim")
            out.append(fmt_bytes(total if total is not None else tracked), "bold")
            if total is None:
                out.append("  (no allocator peak on CPU)", "dim")
            elif note:
                out.append(f"  at {note}", "dim")
            out.append("\n")
        segments = [(float(known.get(name, 0) or 0), CATEGORY_COLORS[name]) for name in CATEGORIES]
        out.append_text(stacked_bar(segments, bar_total or 1.0, width, empty=EMPTY))
        out.append("\n")
        order = sorted(CATEGORIES, key=lambda n: -(known.get(n) or -1))
        biggest = order[0] if known else None
        two_cols = width >= 64 or self.compact
        out.append_text(Text("\n").join(self._legend(order, known, bar_total, biggest, width, two_cols)))
        highwater = self._highwater()
        if highwater and not self.compact:
            labels = CATEGORY_SHORT if width < 64 else CATEGORY_LABELS
            parts = ", ".join(f"{labels[n]} {fmt_bytes(v)}" for n, v in highwater.items())
            out.append(f"\nmax within the step: {parts}", "dim")
        return out

    def _legend(
        self, order: list[str], known: dict[str, int], bar_total: float, biggest: str | None, width: int, two_cols: bool
    ) -> list[Text]:
        short = two_cols and width < 64
        labels = CATEGORY_SHORT if short else CATEGORY_LABELS
        label_w = max(len(labels[n]) for n in CATEGORIES)
        col_w = width // 2 if two_cols else width
        cells: list[Text] = []
        for name in order:
            value = known.get(name)
            emphasis = "bold" if name == biggest else ""
            cell = Text.assemble(("■ ", CATEGORY_COLORS[name]), (f"{labels[name]:<{label_w}} ", emphasis))
            if value is None:
                cell.append("n/a on CPU" if not short else "n/a CPU", "dim italic")
            else:
                size = f"{fmt_bytes_short(value):>4}" if short else f"{fmt_bytes(value):>9}"
                cell.append(size, emphasis)
                pct = 100.0 * value / bar_total if bar_total else 0.0
                cell.append(f" {pct:2.0f}%" if short else f" {pct:3.0f}%", f"bold {CATEGORY_COLORS[name]}" if name == biggest else "dim")
            cells.append(cell)
        if not two_cols:
            return cells
        lines: list[Text] = []
        for i in range(0, len(cells), 2):
            line = cells[i].copy()
            if i + 1 < len(cells):
                line.pad_right(max(1, col_w - line.cell_len))
                line.append_text(cells[i + 1])
            lines.append(line)
        return lines
