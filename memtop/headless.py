"""Headless status lines for `memtop train --no-tui` (Slurm logs, CI, ssh without a tty)."""

from __future__ import annotations

from pathlib import Path

from memtop.runs.reader import OomRecord, RankTail, StepRecord, WarningRecord, rank_files
from memtop.runs.recordfiles import file_label, is_rank
from memtop.units import fmt_bytes, fmt_pct

_SHORT = {"parameters": "params", "gradients": "grads", "optimizer_state": "optim", "activations": "acts", "other": "other"}


def status_text(rec: StepRecord, ranks: int = 1, who: str | None = None) -> str:
    """One line: step, allocator figures (or tracked bytes on CPU), the top category, fragmentation.

    ``who`` names a process without a rank of its own (``"process 1234"``) instead of its rank."""
    parts = [f"[memtop] step {rec.step}"]
    if ranks > 1:
        parts[0] += f" {who}" if who else f" rank {rec.rank or 0}/{ranks}"
    if rec.allocated is not None:
        parts.append(f"alloc {fmt_bytes(rec.allocated)} reserved {fmt_bytes(rec.reserved)} peak {fmt_bytes(rec.peak)}")
        base = rec.peak or 0
    else:
        parts.append(f"tracked {fmt_bytes(rec.tracked)} (cpu: no allocator peak)")
        base = rec.tracked or 0
    known = {k: v for k, v in rec.categories.as_dict().items() if v is not None}
    if known and base:
        top = max(known, key=lambda k: known[k])
        parts.append(f"top {_SHORT.get(top, top)} {fmt_bytes(known[top])} ({fmt_pct(100.0 * known[top] / base)} of {'peak' if rec.peak else 'tracked'})")
    if rec.fragmentation_pct is not None:
        parts.append(f"frag {fmt_pct(rec.fragmentation_pct)}")
    if rec.device_used is not None and rec.device_total:
        label = "rss" if rec.allocated is None else "device"
        parts.append(f"{label} {fmt_bytes(rec.device_used)}/{fmt_bytes(rec.device_total)}")
    if rec.step_time:
        parts.append(f"{rec.step_time * 1000:.0f} ms/step")
    return " | ".join(parts)


class StatusLine:
    """Tails the run's rank files and renders the newest step of each rank."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._tails: dict[int, RankTail] = {}
        self._last: dict[int, StepRecord] = {}
        self._shown: dict[int, int] = {}
        self._events: list[str] = []

    def _poll(self, final: bool) -> None:
        for rank, path in rank_files(self.run_dir).items():
            tail = self._tails.setdefault(rank, RankTail(path))
            for rec in tail.poll(final=final):
                if isinstance(rec, StepRecord):
                    self._last[rank] = rec
                elif isinstance(rec, OomRecord):
                    self._events.append(f"[memtop] {file_label(rank)}: OUT OF MEMORY at step {rec.step}: requested {fmt_bytes(rec.requested_bytes)}")
                elif isinstance(rec, WarningRecord):
                    self._events.append(f"[memtop] {file_label(rank)}: warning: {rec.message}")

    def line(self, final: bool = False) -> str:
        self._poll(final)
        lines = self._events
        self._events = []
        for rank, rec in sorted(self._last.items()):
            if self._shown.get(rank) == rec.step:
                continue
            self._shown[rank] = rec.step
            lines.append(status_text(rec, ranks=len(self._last), who=None if is_rank(rank) else file_label(rank)))
        return "\n".join(lines)
