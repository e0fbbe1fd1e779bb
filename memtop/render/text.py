"""The report as text for a terminal: short sections, tables, a plotext timeline."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from memtop.analyzers.cmdline import join
from memtop.analyzers.report import Report
from memtop.analyzers.suggestion import Suggestion
from memtop.analyzers.summary import Timeline
from memtop.runs.recordfiles import count_label, file_label, short_label
from memtop.units import fmt_bytes, fmt_pct

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
BAR = "█"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "", indent: int = 2) -> list[str]:
    """Plain aligned columns; ``align`` holds one 'l' or 'r' per column (default: first left, rest right)."""
    if not align:
        align = "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    out = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(row, widths, align, strict=False)]
        out.append(" " * indent + "  ".join(cells).rstrip())
    return out


def _heading(title: str, detail: str = "") -> str:
    return f"\n{title}" + (f"  {detail}" if detail else "")


def _bar(pct: float | None, width: int = 24) -> str:
    if pct is None or pct <= 0:
        return ""
    n = max(1, round(width * min(pct, 100.0) / 100.0))
    return BAR * n


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "n/a"


def _secs(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def render_header(rep: Report) -> list[str]:
    r = rep.run
    status = r.status + (f" (exit {r.exit_code})" if r.exit_code is not None else "")
    if rep.exception:
        status += f", raised {rep.exception}"
    ranks = count_label(r.ranks)  # proc<pid>.jsonl files count as processes, not ranks
    lines = [f"memtop analyze: {r.run_id}", f"  status   {status}, {r.steps} steps, {ranks}, {_secs(r.duration)}, started {_when(r.started_at)}"]
    if r.command:
        lines.append(f"  command  {join(r.command)}")
    dev = r.device_name or "unknown device"
    lines.append(f"  device   {dev} ({r.device_kind}, {fmt_bytes(r.device_total)})")
    return lines


def _highwater(hw: int | None, at_peak: int | None) -> str:
    if hw is None:
        return ""
    return fmt_bytes(hw) if at_peak is None or hw > at_peak else "same"


def render_peak(rep: Report) -> list[str]:
    p = rep.peak
    if p is None:
        return [_heading("PEAK", "no step completed")]
    measure = "allocator peak" if p.measure == "allocator_peak" else "tracked bytes (CPU)"
    where = f" at {p.peak_point}" if p.peak_point else ""
    dev = f", {fmt_pct(p.percent_of_device)} of the device" if p.percent_of_device is not None else ""
    lines = [_heading("PEAK", f"{fmt_bytes(p.bytes)} at step {p.step} ({file_label(p.rank)}){dev}  [{measure}{where}]")]
    # each category's high-water mark within the step, where it differs from the peak moment's
    # (zero_grad(set_to_none=True): gradients are 0 at the end of the forward pass, not all step)
    if any(b.highwater is not None and b.bytes is not None and b.highwater > b.bytes for b in p.breakdown):
        rows = [[b.category, fmt_bytes(b.bytes) if b.bytes is not None else "n/a", fmt_pct(b.percent) if b.percent is not None else "n/a", _highwater(b.highwater, b.bytes), _bar(b.percent)] for b in p.breakdown]
        lines += table(["category", "bytes", "% of peak", "max in step", ""], rows, "lrrrl")
    else:
        rows = [[b.category, fmt_bytes(b.bytes) if b.bytes is not None else "n/a", fmt_pct(b.percent) if b.percent is not None else "n/a", _bar(b.percent)] for b in p.breakdown]
        lines += table(["category", "bytes", "% of peak", ""], rows, "lrrl")
    if p.large_tensors:
        lines.append("  largest tensors at the peak:")
        trows = [[t.name, fmt_bytes(t.bytes), t.category, "×".join(str(x) for x in t.shape) or "-", t.dtype.replace("torch.", "")] for t in p.large_tensors[:8]]
        lines += table(["name", "bytes", "category", "shape", "dtype"], trows, "lrlll", indent=4)
    return lines


def _plot(t: Timeline, width: int, color: bool) -> list[str]:
    try:
        import plotext as plt
    except ImportError:
        return []
    pts = t.points
    steps = pts.get("step") or []
    if len(steps) < 2:
        return []
    names: list[str] = [n for n in ("reserved", "peak", "allocated") if n in pts]
    if not names:  # CPU: the process RSS would flatten the tracked figures, so it is not plotted
        names = [n for n in ("tracked", "activations") if n in pts]
    if not names:
        return []
    top = max((v for n in names for v in pts[n] if v is not None), default=0)
    unit, div = ("GiB", 1 << 30) if top >= 1 << 30 else ("MiB", 1 << 20)
    plt.clear_figure()
    plt.plotsize(max(40, min(width, 120)), 14)
    plt.theme("pro" if color else "clear")
    for n in names:
        xs = [s for s, v in zip(steps, pts[n], strict=True) if v is not None]
        ys = [v / div for v in pts[n] if v is not None]
        plt.plot(xs, ys, label=n, marker="braille")
    plt.xlabel("step")
    plt.ylabel(unit)
    out = plt.build()
    plt.clear_figure()
    if not color:
        out = _ANSI.sub("", out)
    return ["  " + line.rstrip() for line in out.splitlines()]


def render_timeline(rep: Report, width: int, plot: bool, color: bool) -> list[str]:
    lines: list[str] = []
    for t in rep.timelines:
        detail = f"{file_label(t.rank)}, steps {t.first_step}–{t.last_step}, step time median {_secs(t.step_time_median)} (p90 {_secs(t.step_time_p90)})"
        lines.append(_heading("TIMELINE", detail))
        if plot and (len(rep.timelines) == 1 or t.rank == (rep.peak.rank if rep.peak else t.rank)):
            lines += _plot(t, width - 2, color)
        rows = []
        for s in t.stats:
            if s.name == "fragmentation_pct":
                rows.append([s.name, fmt_pct(s.first), fmt_pct(s.last), fmt_pct(s.min), fmt_pct(s.max)])
            else:
                rows.append([s.name, fmt_bytes(s.first), fmt_bytes(s.last), fmt_bytes(s.min), fmt_bytes(s.max)])
        lines += table(["series", "first", "last", "min", "max"], rows)
    return lines


def render_fragmentation(rep: Report) -> list[str]:
    f = rep.fragmentation
    if not f.measurable:
        return [_heading("FRAGMENTATION", f.message)]
    lines = [_heading("FRAGMENTATION", f"{f.verdict}: {f.message}")]
    rows = [
        ["mean / last / max", f"{fmt_pct(f.percent_mean)} / {fmt_pct(f.percent_last)} / {fmt_pct(f.percent_max)} of reserved"],
        ["trend", _trend_text(rep)],
        ["at the most reserved", f"{fmt_bytes(f.reserved_max)} reserved, {fmt_bytes(f.waste_bytes)} beyond the step's live peak, {fmt_bytes(f.inactive_split_bytes)} in split free blocks"],
        ["expandable_segments", f"would give back ≈{fmt_bytes(f.expandable_segments_saving)} ({(f.saving_basis or 'n/a').replace('_', ' ')})"],
        ["cache releases", f"{f.cache_releases} (steps where reserved fell by over 20%: empty_cache calls)"],
    ]
    return lines + table(["", ""], rows, "ll")[1:]


def _trend_text(rep: Report) -> str:
    f = rep.fragmentation
    if f.pct_per_1k_steps is None:
        return "n/a"
    span = max((t.last_step - t.first_step for t in rep.timelines if t.rank == f.rank), default=0)
    over = f.pct_per_1k_steps * span / 1000
    return f"{f.trend or 'n/a'} ({over:+.1f} points over the run's {span} steps)"


def render_leak(rep: Report) -> list[str]:
    lk = rep.leak
    head = {"leak": "LEAK: ", "suspected": "possible leak: ", "model_growth": "growth, no leak: ", "none": "", "insufficient_data": "not enough steps: "}.get(lk.verdict, "")
    lines = [_heading("LEAK", f"{head}{lk.message}")]
    if lk.verdict == "insufficient_data":
        return lines
    lines.append(f"  fitted over steps {lk.window_first_step}–{lk.window_last_step} (after {lk.warmup_steps} warm-up steps)")
    rows = [[t.name, fmt_bytes(t.bytes_per_step, signed=True), fmt_bytes(t.growth_bytes, signed=True), f"{t.r2:.2f}", "GROWS" if t.growing else ""] for t in lk.trends]
    lines += table(["series", "per step", "over window", "R²", ""], rows)
    for g in lk.tensors[:5]:
        lines.append(f"  growing tensor: {g.name} ({g.category}) {fmt_bytes(g.first_bytes)} → {fmt_bytes(g.last_bytes)}")
    if lk.steps_until_full is not None:
        lines.append(f"  at this rate the device is full in ≈{lk.steps_until_full} steps")
    return lines


def render_oom(rep: Report) -> list[str]:
    o = rep.oom
    if o is None:
        return []
    where = f"step {o.step}" if o.step is not None else "before the first step"
    lines = [_heading("OUT OF MEMORY", f"at {where}" + (f" on {o.device}" if o.device else ""))]
    lines.append(f"  {o.explanation}")
    rows = [
        ["asked for", fmt_bytes(o.requested_bytes)],
        ["free on the device", fmt_bytes(o.device_free)],
        ["allocated / reserved", f"{fmt_bytes(o.allocated)} / {fmt_bytes(o.reserved)}"],
        ["reserved but unused", fmt_bytes(o.reserved_unused)],
        ["missing", fmt_bytes(o.shortfall_bytes)],
    ]
    lines += table(["", ""], rows, "ll")[1:]
    hrows = [[h.category, fmt_bytes(h.bytes), fmt_pct(h.percent)] for h in o.held]
    lines += table(["held by", "bytes", "% of allocated"], hrows)
    if o.fits_with is not None:
        lines.append(f"  would have fitted: {o.fits_with.change}")
    if o.smallest_batch:
        b = o.smallest_batch
        lines.append(f"  smallest batch that fits: {b.flag} {b.old} → {b.new} (saves ≈{fmt_bytes(b.saving_bytes)})")
    if o.message:
        lines.append(f"  error: {o.message}")
    return lines


def render_stages(rep: Report) -> list[str]:
    if not rep.stages:
        return []
    measure = rep.stages[0].measure
    lines = [_heading("STAGES", "memory: " + ("CUDA allocated" if measure == "cuda_allocated" else "process RSS" if measure == "rss" else measure))]
    rows = [
        [s.name, str(s.count), _secs(s.duration_mean), _secs(s.duration_total), fmt_bytes(s.peak_max), fmt_bytes(s.delta_mean, signed=True) if s.delta_mean is not None else "n/a"]
        for s in rep.stages
    ]
    return lines + table(["stage", "runs", "mean", "total", "peak", "left behind"], rows)


def render_ranks(rep: Report) -> list[str]:
    rk = rep.ranks
    if rk is None:
        return []
    lines = [_heading("RANKS", f"{rk.verdict}: {rk.message}")]
    rows = [[short_label(r.rank), r.device, fmt_bytes(r.peak_bytes), str(r.peak_step), _secs(r.step_time_median)] for r in rk.rows]
    return lines + table(["rank", "device", "peak", "at step", "step time"], rows)


def render_suggestion(i: int, s: Suggestion) -> list[str]:
    if s.saving_bytes is None:
        gain = ""
    elif s.saving_bytes == 0:
        gain = " — the peak does not change"
    elif s.saving_bytes > 0:
        gain = f" — saves ≈{fmt_bytes(s.saving_bytes)}"
    else:
        gain = f" — uses ≈{fmt_bytes(-s.saving_bytes)} more"
    lines = [f"  {i}. {s.title}{gain}  [{s.confidence}]", f"     why:     {s.reason}", f"     cost:    {s.cost}", f"     change:  {_indented(s.change)}"]
    if s.assumption:
        lines.append(f"     assumes: {s.assumption}")
    return lines


def _indented(text: str) -> str:
    """A multi-line change (a code snippet) lined up under its label."""
    return text.replace("\n", "\n" + " " * 15)


def render_suggestions(suggestions: list[Suggestion]) -> list[str]:
    if not suggestions:
        return [_heading("SUGGESTIONS", "none: nothing measured calls for a change")]
    lines = [_heading("SUGGESTIONS", "largest saving first; estimates from this run's measured figures")]
    for i, s in enumerate(suggestions, 1):
        lines += render_suggestion(i, s)
    return lines


def render(rep: Report, width: int = 100, plot: bool = True, color: bool = False) -> str:
    parts = render_header(rep)
    parts += render_peak(rep)
    parts += render_oom(rep)
    parts += render_timeline(rep, width, plot, color)
    parts += render_fragmentation(rep)
    parts += render_leak(rep)
    parts += render_stages(rep)
    parts += render_ranks(rep)
    parts += render_suggestions(rep.suggestions)
    notes = [*rep.unmeasured, *rep.warnings]
    if notes:
        parts.append(_heading("NOTES"))
        parts += [f"  - {n}" for n in notes]
    return "\n".join(parts) + "\n"
