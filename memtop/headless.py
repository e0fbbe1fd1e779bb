"""Headless status lines for `memtop train --no-tui` (Slurm logs, CI, ssh without a tty)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memtop.runs.reader import RankTail, rank_files
from memtop.units import fmt_bytes, fmt_pct

_SHORT = {"parameters": "params", "gradients": "grads", "optimizer_state": "optim", "activations": "acts", "other": "other"}


def status_text(rec: dict[str, Any], ranks: int = 1) -> str:
    """One line: step, allocator figures (or tracked bytes on CPU), the top category, fragmentation."""
    parts = [f"[memtop] step {rec.get('step', '?')}"]
    if ranks > 1:
        parts[0] += f" rank {rec.get('rank', 0)}/{ranks}"
    cats = rec.get("categories") or {}
    if rec.get("allocated") is not None:
        parts.append(f"alloc {fmt_bytes(rec.get('allocated'))} reserved {fmt_bytes(rec.get('reserved'))} peak {fmt_bytes(rec.get('peak'))}")
        base = rec.get("peak") or 0
    else:
        tracked = rec.get("tracked")
        parts.append(f"tracked {fmt_bytes(tracked)} (cpu: no allocator peak)")
        base = tracked or 0
    known = {k: v for k, v in cats.items() if isinstance(v, int)}
    if known and base:
        top = max(known, key=lambda k: known[k])
        parts.append(f"top {_SHORT.get(top, top)} {fmt_bytes(known[top])} ({fmt_pct(100.0 * known[top] / base)} of {'peak' if rec.get('peak') else 'tracked'})")
    if rec.get("fragmentation_pct") is not None:
        parts.append(f"frag {fmt_pct(rec['fragmentation_pct'])}")
    if rec.get("device_used") is not None and rec.get("device_total"):
        label = "rss" if rec.get("allocated") is None else "device"
        parts.append(f"{label} {fmt_bytes(rec['device_used'])}/{fmt_bytes(rec['device_total'])}")
    if rec.get("step_time"):
        parts.append(f"{rec['step_time'] * 1000:.0f} ms/step")
    return " | ".join(parts)


class StatusLine:
    """Tails the run's rank files and renders the newest step of each rank."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._tails: dict[int, RankTail] = {}
        self._last: dict[int, dict[str, Any]] = {}
        self._shown: dict[int, int] = {}
        self._events: list[str] = []

    def _poll(self, final: bool) -> None:
        for rank, path in rank_files(self.run_dir).items():
            tail = self._tails.setdefault(rank, RankTail(path))
            for rec in tail.poll(final=final):
                kind = rec.get("type")
                if kind == "step":
                    self._last[rank] = rec.as_json()
                elif kind == "oom":
                    self._events.append(f"[memtop] rank {rank}: OUT OF MEMORY at step {rec.get('step')}: requested {fmt_bytes(rec.get('requested_bytes'))}")
                elif kind == "warning":
                    self._events.append(f"[memtop] rank {rank}: warning: {rec.get('message')}")

    def line(self, final: bool = False) -> str:
        self._poll(final)
        lines = self._events
        self._events = []
        for rank, rec in sorted(self._last.items()):
            if self._shown.get(rank) == rec.get("step"):
                continue
            self._shown[rank] = int(rec.get("step", 0))
            lines.append(status_text(rec, ranks=len(self._last)))
        return "\n".join(lines)
