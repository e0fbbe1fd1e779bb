"""Text-cell drawing helpers: stacked bars at half-cell resolution and sparklines.

Half-cell resolution comes from ``▌`` drawn with the left segment's colour as foreground and the
right one's as background, so two categories can meet inside one cell.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from rich.text import Text

# Category colours: distinct on dark and light backgrounds, and in the order people read them.
CATEGORY_COLORS: dict[str, str] = {
    "parameters": "#4ea1ff",
    "gradients": "#b48cff",
    "optimizer_state": "#ffb347",
    "activations": "#4fd18b",
    "other": "#8f9bb3",
}
CATEGORY_LABELS: dict[str, str] = {
    "parameters": "parameters",
    "gradients": "gradients",
    "optimizer_state": "optimizer state",
    "activations": "activations",
    "other": "other",
}
CATEGORY_SHORT: dict[str, str] = {
    "parameters": "params",
    "gradients": "grads",
    "optimizer_state": "optim",
    "activations": "activ",
    "other": "other",
}

EMPTY = "#30363d"
CONTEXT = "#6b7280"

LEVEL_OK = "#4fd18b"
LEVEL_WARN = "#ffb347"
LEVEL_HIGH = "#ff5f5f"

# The same hues, darker: the part of a gauge that is reserved but not allocated.
_DIM = {LEVEL_OK: "#2f7a52", LEVEL_WARN: "#99692b", LEVEL_HIGH: "#993a3a"}


def level_color(fraction: float | None) -> str:
    """Green, amber, red by how full the device is (nvitop's thresholds, roughly)."""
    if fraction is None:
        return LEVEL_OK
    if fraction >= 0.9:
        return LEVEL_HIGH
    if fraction >= 0.75:
        return LEVEL_WARN
    return LEVEL_OK


def dim_color(color: str) -> str:
    return _DIM.get(color, color)


def _half_cells(values: Sequence[float], total: float, halves: int) -> list[int]:
    """Largest-remainder split of ``halves`` half-cells over ``values`` (sum ≤ total)."""
    if total <= 0 or halves <= 0:
        return [0 for _ in values]
    exact = [max(0.0, v) / total * halves for v in values]
    counts = [int(x) for x in exact]
    budget = min(halves, round(sum(exact)))
    order = sorted(range(len(values)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order:
        if sum(counts) >= budget:
            break
        if exact[i] - counts[i] > 0:
            counts[i] += 1
    # A segment that exists but rounded to nothing still gets one half-cell, if there is room.
    for i, x in enumerate(exact):
        if x > 0 and counts[i] == 0 and sum(counts) < halves:
            counts[i] = 1
    return counts


def stacked_bar(
    segments: Sequence[tuple[float, str]],
    total: float,
    width: int,
    *,
    empty: str = EMPTY,
    marker: tuple[float, str] | None = None,
) -> Text:
    """A one-line bar ``width`` cells wide; ``segments`` are (value, colour) from the left.

    ``marker`` (value, colour) draws a thin ``┃`` at that position over the bar (e.g. the peak).
    """
    halves = 2 * max(0, width)
    counts = _half_cells([v for v, _ in segments], total, halves)
    colors: list[str] = []
    for (_, color), n in zip(segments, counts, strict=True):
        colors.extend([color] * n)
    colors = colors[:halves]
    colors.extend([empty] * (halves - len(colors)))
    marker_cell = -1
    if marker is not None and total > 0:
        marker_cell = min(width - 1, max(0, int(marker[0] / total * width)))
    # Cells as (glyph, style key); runs of equal cells become one span (fewer segments to paint).
    cells: list[tuple[str, tuple[str, str, bool]]] = []
    for cell in range(width):
        left, right = colors[2 * cell], colors[2 * cell + 1]
        if cell == marker_cell and marker is not None:
            cells.append(("┃", (marker[1], right, True)))
        elif left == right:
            cells.append((" ", ("", left, False)))
        else:
            cells.append(("▌", (left, right, False)))
    text = Text()
    i = 0
    while i < len(cells):
        glyph, key = cells[i]
        j = i + 1
        while j < len(cells) and cells[j] == cells[i]:
            j += 1
        fg, bg, bold = key
        text.append(glyph * (j - i), Style(color=fg or None, bgcolor=bg, bold=bold))
        i = j
    return text


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(
    values: Sequence[float | None], width: int, *, lo: float | None = None, hi: float | None = None, min_span: float = 0.0
) -> str:
    """The last ``width`` values as ``▁▂▃▄▅▆▇█`` (gaps for None); ``min_span`` keeps noise flat."""
    vals = list(values)[-width:] if width > 0 else []
    known = [v for v in vals if v is not None]
    if not known:
        return ""
    low = min(known) if lo is None else lo
    high = max(known) if hi is None else hi
    if min_span and high - low < min_span:
        high = low + min_span
    span = high - low
    out = []
    for v in vals:
        if v is None:
            out.append(" ")
        elif span <= 0:
            out.append(SPARK[0])
        else:
            idx = int((v - low) / span * (len(SPARK) - 1) + 0.5)
            out.append(SPARK[min(len(SPARK) - 1, max(0, idx))])
    return "".join(out)


def flow(items: Sequence[Text], width: int, sep: str = "  ") -> Text:
    """Lay ``items`` out left to right, wrapping between items (never inside one)."""
    lines: list[Text] = []
    line = Text()
    for item in items:
        if line.cell_len and line.cell_len + len(sep) + item.cell_len > width:
            lines.append(line)
            line = Text()
        if line.cell_len:
            line.append(sep)
        line.append_text(item)
    if line.cell_len:
        lines.append(line)
    return Text("\n").join(lines)
