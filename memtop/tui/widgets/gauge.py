"""The device gauge: how full is the card (NVML), and how much of that is PyTorch's allocator.

CUDA: one bar of the card's total with allocated, reserved-but-free (the caching allocator's
cache), and the rest of this process's use (CUDA context, NCCL buffers) stacked, and the step's
peak marked. CPU: resident set size of the process against the machine's RAM, the tensors memtop
tracks marked; the allocator figures are said to be unmeasurable rather than drawn as zeros.
In a small terminal (``compact``) the gauge also carries the fragmentation line.
"""

from __future__ import annotations

from rich.text import Text

from memtop.tui.fmt import fmt_bytes, fmt_pct
from memtop.tui.snapshot import RankSnapshot, RunSnapshot
from memtop.tui.widgets.bars import CONTEXT, EMPTY, dim_color, flow, level_color, stacked_bar
from memtop.tui.widgets.fragmentation import frag_text
from memtop.tui.widgets.panel import TextPanel, set_border

PEAK_MARK = "#ffffff"


class DeviceGauge(TextPanel):
    DEFAULT_CSS = """
    DeviceGauge { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._snap: RunSnapshot | None = None
        self._rank: RankSnapshot | None = None
        self.compact = False

    def show(self, snap: RunSnapshot, rank: RankSnapshot | None) -> None:
        self._snap, self._rank = snap, rank
        if rank is not None and rank.last is not None:
            dev = rank.device
            name = snap.device_name if len(snap.devices) <= 1 else None
            title = f"Device · {dev}" + (" · at the OOM" if rank.oom is not None else "")
            set_border(self, title=title + (f" · {name}" if name and dev.startswith("cuda") else ""))
        else:
            set_border(self, title="Device")
        self.changed()

    def build(self, width: int) -> Text:
        width = max(10, width)
        rank = self._rank
        if rank is None or rank.last is None:
            return Text("waiting for the first step record…", style="dim italic")
        body = self._render_cuda(rank, width) if rank.is_cuda else self._render_cpu(rank, width)
        if self.compact:
            body.append("\n")
            body.append_text(frag_text(rank, width, compact=True, label=True))
        return body

    def _total(self, rank: RankSnapshot) -> int | None:
        last = rank.last
        if last is not None and last.device_total:
            return last.device_total
        snap = self._snap
        if snap is not None:
            for d in snap.devices:
                if d.total_bytes and (d.index is None or f"cuda:{d.index}" == rank.device):
                    return d.total_bytes
        return None

    def _render_cuda(self, rank: RankSnapshot, width: int) -> Text:
        last = rank.last
        assert last is not None
        total = self._total(rank)
        oom = rank.oom
        if oom is not None and oom.allocated is not None:
            # At an OOM the moment that matters is the failed allocation, not the last good step.
            used = total - oom.device_free if total and oom.device_free is not None else None
            marker_at = oom.allocated + oom.requested_bytes if oom.requested_bytes else None
            return self._cuda_figures(
                width, total, oom.allocated, oom.reserved, used, marker_at, "asked", f"+{fmt_bytes(oom.requested_bytes)}"
            )
        return self._cuda_figures(
            width, total, last.allocated, last.reserved, last.device_used, last.peak, "peak", fmt_bytes(last.peak)
        )

    def _cuda_figures(
        self,
        width: int,
        total: int | None,
        allocated: int | None,
        reserved_bytes: int | None,
        used: int | None,
        marker_at: int | None,
        marker_name: str,
        marker_text: str,
    ) -> Text:
        alloc = allocated or 0
        reserved = max(reserved_bytes or 0, alloc)
        fill = used if used is not None else reserved
        color = level_color(fill / total if total else None)
        short = self.compact or width < 44
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append("used " if used is not None else "reserved ", "dim")
        out.append(fmt_bytes(fill), "bold")
        if total:
            out.append(f" of {fmt_bytes(total)}  ", "dim")
            out.append(fmt_pct(100.0 * fill / total), f"bold {color}")
            if not short:
                out.append(f"  free {fmt_bytes(max(0, total - fill))}", "dim")
            out.append("\n")
            context = max(0, (used or reserved) - reserved)
            segments = [(float(alloc), color), (float(reserved - alloc), dim_color(color)), (float(context), CONTEXT)]
            marker = (float(min(marker_at, total)), PEAK_MARK) if marker_at is not None else None
            out.append_text(stacked_bar(segments, float(total), width, empty=EMPTY, marker=marker))
        out.append("\n")
        names = ("alloc", "resv", "ctx") if short else ("allocated", "reserved", "context")
        items = [
            Text.assemble(("█ ", color), f"{names[0]} {fmt_bytes(allocated)}"),
            Text.assemble(("█ ", dim_color(color)), f"{names[1]} {fmt_bytes(reserved_bytes)}"),
        ]
        if marker_at is not None:
            items.append(Text.assemble(("┃ ", f"bold {PEAK_MARK}"), f"{marker_name} {marker_text}"))
        if used is not None:
            items.append(Text.assemble(("█ ", CONTEXT), f"{names[2]} {fmt_bytes(max(0, used - reserved))}"))
        elif not short:
            items.append(Text("NVML n/a: no process total", style="dim"))
        out.append_text(flow(items, width, sep=" " if short else "  "))
        return out

    def _render_cpu(self, rank: RankSnapshot, width: int) -> Text:
        last = rank.last
        assert last is not None
        total = self._total(rank)
        rss = last.device_used
        tracked = last.tracked
        short = self.compact or width < 44
        out = Text()
        if rss is None:
            out.append("process memory n/a", "dim")
        else:
            color = level_color(rss / total if total else None)
            out.append("RSS ", "dim")
            out.append(fmt_bytes(rss), "bold")
            if total:
                out.append(f" of {fmt_bytes(total)} RAM  ", "dim")
                out.append(fmt_pct(100.0 * rss / total), f"bold {color}")
                out.append("\n")
                t = min(float(tracked or 0), float(rss))
                out.append_text(stacked_bar([(t, color), (float(rss) - t, CONTEXT)], float(total), width, empty=EMPTY))
            out.append("\n")
            items = [
                Text.assemble(("█ ", color), f"tensors {fmt_bytes(tracked)}"),
                Text.assemble(("█ ", CONTEXT), f"{'rest' if short else 'rest of RSS'} {fmt_bytes(max(0, rss - (tracked or 0)))}"),
            ]
            out.append_text(flow(items, width, sep=" " if short else "  "))
        out.append("\n")
        out.append("alloc/reserved/peak: n/a on CPU" if short else "allocated · reserved · peak: n/a on CPU (no caching allocator)", "dim italic")
        return out
