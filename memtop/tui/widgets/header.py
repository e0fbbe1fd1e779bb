"""The top of the screen: which run, is it alive, how far along; and the banner saying how it ended."""

from __future__ import annotations

import shlex

from rich.style import Style
from rich.text import Text

from memtop.runs.recordfiles import count_label
from memtop.tui.fmt import fmt_bytes, fmt_count, fmt_duration, fmt_step_time, shorten
from memtop.tui.snapshot import Ending, RunSnapshot
from memtop.tui.widgets.panel import TextPanel

_STATUS_STYLE = {
    "running": ("● RUNNING", "bold #0d1117 on #4fd18b"),
    "paused": ("‖ PAUSED", "bold #0d1117 on #ffb347"),
    "finished": ("■ FINISHED", "bold #0d1117 on #4ea1ff"),
    "failed": ("✖ FAILED", "bold white on #c0392b"),
    "oom": ("✖ OOM", "bold white on #c0392b"),
    "killed": ("✖ KILLED", "bold white on #c0392b"),
    "interrupted": ("■ INTERRUPTED", "bold #0d1117 on #ffb347"),
    "lost": ("? LOST", "bold #0d1117 on #ffb347"),
    "waiting": ("… WAITING", "bold #0d1117 on #8f9bb3"),
}


def command_text(argv: tuple[str, ...], width: int) -> str:
    """The command in ``width`` cells, keeping what identifies it: the script's name and its flags.

    Paths are cut to their last component first (``/usr/bin/python3`` -> ``python3``), then the
    arguments are shortened in the middle; the program and the script stay whole.
    """
    if not argv:
        return "(command unknown: no meta.json)"
    full = shlex.join(argv)
    if len(full) <= width:
        return full
    parts = list(argv)
    head = 1
    parts[0] = parts[0].rsplit("/", 1)[-1]
    for i, arg in enumerate(parts[1:], start=1):
        if arg.endswith(".py") and not arg.startswith("-"):
            parts[i] = arg.rsplit("/", 1)[-1]
            head = i + 1
            break
        if not arg.startswith("-"):
            break
    short = shlex.join(parts)
    if len(short) <= width:
        return short
    lead = shlex.join(parts[:head])
    rest = shlex.join(parts[head:])
    room = width - len(lead) - 1
    if room < 5:
        return shorten(lead, width)
    return f"{lead} {shorten(rest, room)}"


class RunHeader(TextPanel):
    """Two lines: status, run id, step, elapsed, speed / the command and the device."""

    DEFAULT_CSS = """
    RunHeader { height: 2; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._width = 80
        self._snap: RunSnapshot | None = None
        self._now = 0.0
        self._paused = False
        self._rank: int | None = None

    def show(self, snap: RunSnapshot, *, now: float, paused: bool, rank: int | None) -> None:
        self._snap, self._now, self._paused, self._rank = snap, now, paused, rank
        self.changed()

    def status_key(self) -> str:
        snap = self._snap
        if snap is None:
            return "waiting"
        ending = snap.ending()
        if ending is not None:
            return ending.kind
        if self._paused:
            return "paused"
        if not snap.ranks:
            return "waiting"
        return "running"

    def build(self, width: int) -> Text:
        width = max(20, width)
        snap = self._snap
        label, style = _STATUS_STYLE[self.status_key()]
        line1 = Text(no_wrap=True, overflow="ellipsis")
        line1.append(" memtop ", "bold #0d1117 on #b48cff")
        line1.append(" ")
        line1.append(f" {label} ", style)
        if snap is None:
            line1.append("  reading the run…", "dim")
            return line1
        step = snap.last_step
        parts: list[tuple[str, str]] = []
        if step is not None:
            total = f"/{fmt_count(snap.max_steps)}" if snap.max_steps else ""
            parts.append((f"step {fmt_count(step)}{total}", "bold"))
        else:
            parts.append(("no steps yet", "dim"))
        elapsed = snap.elapsed(self._now)
        if elapsed is not None:
            parts.append((f"elapsed {fmt_duration(elapsed)}", ""))
        rank = snap.rank(self._rank or 0)
        if rank is not None and rank.step_rate is not None:
            parts.append((fmt_step_time(rank.step_rate), ""))
        if len(snap.ranks) > 1:
            parts.append((count_label(r.rank for r in snap.ranks), ""))
        if snap.behind:
            pct = f" {snap.progress:.0%}" if snap.progress is not None else "…"
            parts.append((f"reading the run{pct}", "italic #ffb347"))
        for text, st in parts:
            line1.append("  ")
            line1.append(text, st)
        run_id = snap.run_id
        room = width - line1.cell_len - 2
        if room > 8:
            rid = shorten(run_id, room)
            line1.append(" " * (room - len(rid) + 1))
            line1.append(rid, "dim")
        line2 = Text(no_wrap=True, overflow="ellipsis")
        device = snap.device_name or (rank.device if rank is not None else "")
        right = f"{device}" + (f" · {snap.host}" if snap.host else "")
        right = shorten(right, max(12, width // 3))
        cmd_room = max(10, width - len(right) - 6)
        line2.append(" $ ", Style(color="#b48cff", bold=True))
        line2.append(command_text(snap.command, cmd_room))
        pad = width - line2.cell_len - len(right) - 1
        if pad >= 2:
            line2.append(" " * pad)
            line2.append(right, "#8f9bb3")
        return Text("\n").join([line1, line2])


class EndBanner(TextPanel):
    """Shown once the run has ended: how (exit code, OOM, signal), and what to do next. One line."""

    DEFAULT_CSS = """
    EndBanner { height: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._width = 80
        self._message = Text()
        self._hint = ""

    def say(self, text: str) -> None:
        """Show a plain message (e.g. while memtop ends the run)."""
        self.display = True
        self._message, self._hint = Text(f" {text}", style="bold"), ""
        self.changed()

    def show(self, snap: RunSnapshot, ending: Ending | None) -> None:
        self.display = ending is not None
        if ending is None:
            return
        for kind in ("finished", "failed", "oom", "killed", "interrupted", "lost"):
            self.set_class(kind == ending.kind, f"-{kind}")
        head = {
            "finished": "Run finished",
            "failed": "Run failed",
            "oom": "Run ran OUT OF MEMORY",
            "killed": "Run was killed",
            "interrupted": "Run was interrupted",
            "lost": "Run lost",
        }.get(ending.kind, "Run ended")
        text = Text()
        text.append(f" {head}: ", "bold")
        text.append(ending.text)
        steps = snap.last_step
        if steps is not None:
            text.append(f" · {fmt_count(steps)} steps")
        oom = snap.oom
        if oom is not None and oom.allocated is not None:
            text.append(f" · {fmt_bytes(oom.allocated)} allocated")
            if oom.device_free is not None:
                text.append(f", {fmt_bytes(oom.device_free)} free")
        self._message = text
        self._hint = f"q closes · `memtop analyze {snap.run_id}` explains it"
        self.changed()

    def build(self, width: int) -> Text:
        out = self._message.copy()
        out.no_wrap = True
        out.overflow = "ellipsis"
        for hint in (self._hint, "q closes · memtop analyze explains it", "q closes"):
            if hint and out.cell_len + 2 + len(hint) <= width:
                out.append("  ")
                out.append(hint, "italic")
                break
        out.truncate(max(1, width), overflow="ellipsis")
        return out
