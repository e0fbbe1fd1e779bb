"""Fragmentation: how much of what the caching allocator reserved is not in use, and where it is heading."""

from __future__ import annotations

from rich.text import Text

from memtop.tui.fmt import fmt_bytes, fmt_pct
from memtop.tui.snapshot import RankSnapshot
from memtop.tui.widgets.bars import LEVEL_HIGH, LEVEL_OK, LEVEL_WARN, sparkline
from memtop.tui.widgets.panel import TextPanel

# Trend thresholds in percentage points per 100 steps.
_STEADY = 0.5


def trend_text(slope: float | None, *, short: bool = False) -> tuple[str, str]:
    if slope is None:
        return ("" if short else "trend: too few steps"), "dim"
    if slope > _STEADY:
        return ("↗ rising" if short else f"↗ rising {slope:+.1f} pts/100 steps"), LEVEL_WARN
    if slope < -_STEADY:
        return ("↘ falling" if short else f"↘ falling {slope:+.1f} pts/100 steps"), LEVEL_OK
    return "→ steady", "dim"


def frag_color(pct: float | None) -> str:
    if pct is None:
        return "dim"
    if pct >= 30:
        return LEVEL_HIGH
    if pct >= 15:
        return LEVEL_WARN
    return LEVEL_OK


def frag_text(rank: RankSnapshot | None, width: int, *, compact: bool = False, label: bool = False) -> Text:
    """One line (two when there is room for the inactive-split figure) about fragmentation."""
    out = Text(no_wrap=True, overflow="ellipsis")
    if label:
        out.append("frag ", "dim")
    if rank is None or rank.last is None:
        out.append("waiting for the first step record…", "dim italic")
        return out
    last = rank.last
    if not rank.is_cuda or last.fragmentation_pct is None:
        out.append("n/a on CPU", "dim italic")
        if not compact:
            out.append(": no caching allocator", "dim")
        return out
    pct = last.fragmentation_pct
    out.append(fmt_pct(pct), f"bold {frag_color(pct)}")
    if compact:
        out.append(f" {fmt_bytes(last.fragmentation_bytes)} ", "dim")
    else:
        out.append(f" of reserved ({fmt_bytes(last.fragmentation_bytes)})  ", "dim")
    trend, style = trend_text(rank.frag_trend, short=compact)
    if out.cell_len + len(trend) > width:
        trend, style = trend_text(rank.frag_trend, short=True)
    out.append(trend, style)
    spark_w = width - out.cell_len - 2
    if spark_w >= 6:
        out.append("  ")
        out.append(sparkline(rank.history.column("frag_pct"), spark_w, min_span=2.0), frag_color(pct))
    if not compact and last.inactive_split_bytes is not None:
        out.append("\n")
        out.append(f"inactive split blocks {fmt_bytes(last.inactive_split_bytes)}", "dim")
    return out


class FragPanel(TextPanel):
    DEFAULT_CSS = """
    FragPanel { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rank: RankSnapshot | None = None

    def show(self, rank: RankSnapshot | None) -> None:
        self._rank = rank
        self.changed()

    def build(self, width: int) -> Text:
        return frag_text(self._rank, max(10, width))
