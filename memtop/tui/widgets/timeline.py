"""The timeline: allocated, reserved and peak per step (textual-plotext), decimated to the plot's width.

Plotext rebuilds the whole canvas on every build (15-50 ms for a plot a hundred cells wide,
however few points), so the plot is rebuilt only when its data or size changed, and not more often
than ``min_interval`` seconds (5) while a run streams in: the figures above it move twice a
second; the shape of the timeline does not need to, and the dashboard's CPU budget (5% of a core)
cannot pay for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from memtop.tui.fmt import fmt_bytes, fmt_count, unit_for
from memtop.tui.history import SeriesPoints, downsample_max
from memtop.tui.snapshot import RankSnapshot
from memtop.tui.widgets.panel import set_border

_RGB = {
    "allocated": (79, 209, 139),
    "reserved": (78, 161, 255),
    "peak": (255, 179, 71),
    "tensors": (79, 209, 139),
    "RSS": (143, 155, 179),
    "device total": (255, 95, 95),
}

_FIELDS = {"peak": "peak", "reserved": "reserved", "allocated": "allocated", "RSS": "device_used", "tensors": "tracked"}


def step_ticks(first: int, last: int, n: int) -> list[int]:
    """About ``n`` whole-number step ticks from ``first`` to ``last`` on round values."""
    if last <= first:
        return [first]
    raw = (last - first) / max(1, n - 1)
    magnitude = 10 ** max(0, len(str(int(raw))) - 1)
    step = next((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), 10 * magnitude)
    start = (first + step - 1) // step * step
    ticks = list(range(start, last + 1, step))
    if len(ticks) < 2:
        return [first, last]
    return ticks


def value_ticks(top: float, n: int) -> list[float]:
    """About ``n`` round ticks from 0 to ``top`` (0, 10, 20 … or 0, 2.5, 5 …), for the y axis."""
    if top <= 0:
        return [0.0]
    raw = top / max(1, n)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    count = int(top / step + 1e-9)
    return [round(i * step, 6) for i in range(count + 1)]


def _tick_label(value: float) -> str:
    return f"{value:g}"


class Timeline(PlotextPlot):
    DEFAULT_CSS = """
    Timeline { height: 1fr; min-height: 6; }
    """

    def __init__(
        self,
        *,
        id: str | None = None,
        min_interval: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        marker: str = "hd",
    ) -> None:
        super().__init__(id=id)
        self.min_interval = min_interval
        self.marker = marker
        """plotext marker: ``hd`` (quadrant blocks) draws solid lines in any terminal font."""
        self._monotonic = monotonic
        self._points: SeriesPoints | None = None
        self._cuda = True
        self._total: int | None = None
        self._ceiling = 0.0
        self._show_total = False
        self._plotted: tuple[str, ...] = ()
        self._oom_step: int | None = None
        self._key: object = None
        self._built_key: object = None
        self._built: Text | None = None
        self._last_build = -1e9
        self._timer_pending = False
        self.builds = 0

    @staticmethod
    def _max(pts: SeriesPoints, col: str) -> float:
        vals = [v for v in pts.column(col) if v is not None]
        return float(max(vals)) if vals else 0.0

    def _names(self, pts: SeriesPoints, cuda: bool) -> tuple[str, ...]:
        """What to plot. On CPU the process RSS (interpreter, libraries) can dwarf the tensors;
        then it is left to the gauge, so that the tensors' own shape stays readable."""
        if cuda:
            return ("peak", "reserved", "allocated")
        tracked = self._max(pts, "tracked")
        rss = self._max(pts, "device_used")
        if rss and (not tracked or rss <= 4 * tracked):
            return ("RSS", "tensors")
        return ("tensors",)

    def show(self, rank: RankSnapshot | None) -> None:
        if rank is None or len(rank.history) == 0:
            self._points = None
            self._key = None
            set_border(self, title="Timeline", subtitle="")
        else:
            pts = rank.history
            self._points = pts
            self._cuda = rank.is_cuda
            self._total = rank.last.device_total if rank.last is not None else None
            self._plotted = self._names(pts, self._cuda)
            top = max(self._max(pts, _FIELDS[name]) for name in self._plotted)
            total = float(self._total or 0)
            self._show_total = total > 0 and top > 0.5 * total
            self._ceiling = max(top, total) if self._show_total else top
            unit, _ = unit_for(self._ceiling)
            what = ""
            if not self._cuda:
                what = " · tensors" + (" and RSS" if "RSS" in self._plotted else "") + " · allocator n/a on CPU"
            per = pts.steps_per_point
            bucket = "" if per == 1 else f" · max per {fmt_count(per)} steps"
            self._oom_step = rank.oom.step if rank.oom is not None else None
            notes = [f"red: device total {fmt_bytes(self._total)}"] if self._show_total else []
            if self._oom_step is not None:
                notes.append(f"red: OOM at step {self._oom_step}")
            set_border(self, title=f"Timeline · {unit} per step{what}{bucket}", subtitle=" · ".join(notes))
            self._key = (rank.rank, pts.steps[-1], len(pts), per, self._oom_step)
        if self._key != self._built_key:
            self._schedule()

    def _schedule(self) -> None:
        """Repaint now if the last plot is old enough, else once when it will be.

        Only a rebuild is worth a repaint: repainting a plot a hundred cells wide costs as much as
        most of the rest of the screen, so between rebuilds the widget is left alone.
        """
        wait = self.min_interval - (self._monotonic() - self._last_build)
        if wait <= 0 or self._built is None:
            self.refresh()
        elif not self._timer_pending:
            self._timer_pending = True
            self.set_timer(wait + 0.01, self._refresh_later)

    def flush(self) -> None:
        """Let the next render rebuild at once (the run ended: show its final state now)."""
        self._last_build = -1e9
        self.refresh()

    def _series(self, width: int) -> list[tuple[str, list[int], list[float]]]:
        pts = self._points
        if pts is None:
            return []
        out: list[tuple[str, list[int], list[float]]] = []
        for name in self._plotted:
            xs, ys = downsample_max(pts.steps, pts.column(_FIELDS[name]), max(8, 2 * width))
            pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if pairs:
                out.append((name, [p[0] for p in pairs], [float(p[1]) for p in pairs]))
        return out

    def _refresh_later(self) -> None:
        self._timer_pending = False
        self.refresh()

    def render(self) -> RenderResult:
        width, height = self.size.width, self.size.height
        key = (self._key, width, height, self.app.theme)
        now = self._monotonic()
        if self._built is not None and key != self._built_key and now - self._last_build < self.min_interval:
            # Asked to paint between rebuilds (e.g. a resize of a neighbour): the last plot, and a rebuild later.
            self._schedule()
            return self._built
        if self._built is not None and key == self._built_key:
            return self._built
        self._built_key = key
        series = self._series(width - 8)
        if not series:
            # A placeholder is not a plot: the first real data is drawn at once, not after the interval.
            self._built = None
            return Text("waiting for steps…", style="dim italic")
        self._last_build = now
        self.builds += 1
        _, div = unit_for(self._ceiling)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        for name, xs, ys in series:
            plt.plot(xs, [y / div for y in ys], label=name, color=_RGB[name], marker=self.marker)
        if self._show_total and self._total:
            plt.hline(self._total / div, color=_RGB["device total"])
        if self._oom_step is not None:
            plt.vline(float(self._oom_step), color=_RGB["device total"])
        plt.ylim(0, self._ceiling / div * 1.05 if self._ceiling > 0 else 1)
        ticks = step_ticks(series[0][1][0], series[0][1][-1], max(2, min(6, width // 14)))
        plt.xticks([float(t) for t in ticks], [fmt_count(t) for t in ticks])
        yt = value_ticks(self._ceiling / div, 3 if height < 12 else 5)
        plt.yticks(yt, [_tick_label(v) for v in yt])
        built = super().render()
        self._built = built if isinstance(built, Text) else Text(str(built))
        return self._built
