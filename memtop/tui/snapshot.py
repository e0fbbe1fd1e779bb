"""Immutable views of a run that the reader thread hands to the UI thread.

Everything here is frozen and made of tuples, so a snapshot can cross threads without locks and the
UI can keep an old one while a newer one is built. Nothing here imports Textual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memtop.runs.format import CATEGORIES
from memtop.tui.fmt import describe_exit_code, fmt_bytes, signal_name
from memtop.tui.history import SeriesPoints

HISTORY_FIELDS = ("allocated", "reserved", "peak", "device_used", "tracked", "frag_pct")


@dataclass(frozen=True)
class TensorRow:
    name: str
    category: str
    bytes: int
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class StepView:
    """The figures of one ``step`` record, typed; ``None`` wherever the device cannot measure."""

    step: int
    time: float | None
    device: str
    step_time: float | None
    allocated: int | None
    reserved: int | None
    peak: int | None
    device_used: int | None
    device_total: int | None
    fragmentation_bytes: int | None
    fragmentation_pct: float | None
    inactive_split_bytes: int | None
    categories: tuple[tuple[str, int | None], ...]
    peak_point: str | None
    tracked: int | None
    activations_step: int | None
    sample_every: int | None
    large_tensors: tuple[TensorRow, ...]
    highwater: tuple[tuple[str, int | None], ...] = ()  # each category's largest value within the step

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def category(self, name: str) -> int | None:
        for key, value in self.categories:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class OomView:
    step: int | None
    message: str
    requested_bytes: int | None
    allocated: int | None
    reserved: int | None
    device_free: int | None
    categories: tuple[tuple[str, int | None], ...]
    large_tensors: tuple[TensorRow, ...]

    def headline(self) -> str:
        where = f" at step {self.step}" if self.step is not None else ""
        ask = f" (tried to allocate {fmt_bytes(self.requested_bytes)})" if self.requested_bytes else ""
        return f"out of memory{where}{ask}"


@dataclass(frozen=True)
class ExitView:
    reason: str
    exception: str | None
    steps: int | None


@dataclass(frozen=True)
class RankSnapshot:
    rank: int
    device: str
    steps_seen: int
    last: StepView | None
    max_peak: int | None
    max_peak_step: int | None
    history: SeriesPoints
    frag_trend: float | None
    """Fragmentation trend in percentage points per 100 steps (None until there are enough points)."""
    step_rate: float | None
    """Mean seconds per step over the recent records."""
    oom: OomView | None = None
    exit: ExitView | None = None
    last_stage: str | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass(frozen=True)
class SuggestionRow:
    rule: str
    title: str
    reason: str
    saving_bytes: int | None
    cost: str
    change: str
    confidence: str
    command: tuple[str, ...] | None = None
    """The new argv, when the change is to the command line."""
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SuggestionsView:
    state: str
    """``pending`` (not computed yet), ``unavailable`` (no advisor installed), ``ok`` or ``error``."""
    items: tuple[SuggestionRow, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class ChildView:
    """What the dashboard knows about the child ``memtop train`` launched (None for ``memtop watch``)."""

    pid: int
    exit_code: int | None
    description: str | None

    @property
    def running(self) -> bool:
        return self.exit_code is None


@dataclass(frozen=True)
class DeviceInfo:
    index: int | None
    name: str
    total_bytes: int | None
    kind: str


@dataclass(frozen=True)
class Ending:
    """How a run ended, for the banner: ``kind`` picks the colour, ``text`` is what a person reads."""

    kind: str  # finished | failed | oom | killed | interrupted | lost
    text: str


@dataclass(frozen=True)
class RunSnapshot:
    run_dir: str
    run_id: str
    command: tuple[str, ...] = ()
    host: str | None = None
    devices: tuple[DeviceInfo, ...] = ()
    started_at: float | None = None
    ended_at: float | None = None
    meta_status: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    max_steps: int | None = None
    first_time: float | None = None
    last_time: float | None = None
    ranks: tuple[RankSnapshot, ...] = ()
    warnings: tuple[str, ...] = ()
    log_lines: tuple[str, ...] = ()
    log_total: int = 0
    has_log: bool = False
    suggestions: SuggestionsView = field(default_factory=lambda: SuggestionsView("pending"))
    child: ChildView | None = None
    writer_gone: bool = False
    """meta.json says running, but the memtop process that wrote it is gone (same host only)."""
    bad_lines: int = 0
    behind: bool = False
    """The reader has not caught up with the files yet (a long run being loaded)."""
    progress: float | None = None
    """While ``behind``: the fraction of the rank files read so far."""
    version: int = 0

    def rank(self, rank: int) -> RankSnapshot | None:
        for r in self.ranks:
            if r.rank == rank:
                return r
        return self.ranks[0] if self.ranks else None

    @property
    def last_step(self) -> int | None:
        steps = [r.last.step for r in self.ranks if r.last is not None]
        return max(steps) if steps else None

    @property
    def oom(self) -> OomView | None:
        for r in self.ranks:
            if r.oom is not None:
                return r.oom
        return None

    @property
    def device_name(self) -> str | None:
        if self.devices:
            names = sorted({d.name for d in self.devices})
            if len(self.devices) > 1 and len(names) == 1:
                return f"{len(self.devices)}× {names[0]}"
            return ", ".join(names)
        return None

    @property
    def is_cpu(self) -> bool:
        if self.ranks:
            return not any(r.is_cuda for r in self.ranks)
        return bool(self.devices) and all(d.kind == "cpu" for d in self.devices)

    @property
    def live(self) -> bool:
        return self.ending() is None

    def elapsed(self, now: float) -> float | None:
        start = self.started_at if self.started_at is not None else self.first_time
        if start is None:
            return None
        end = self.ended_at
        if end is None and not self.live:
            end = self.last_time
        if end is None:
            end = now
        return max(0.0, end - start)

    def ending(self) -> Ending | None:
        """None while the run goes on; else how it ended, from the child, meta.json and the records."""
        oom = self.oom
        if self.child is not None:
            if self.child.running:
                return None
            code = self.child.exit_code
            how = self.child.description or describe_exit_code(code)
            if oom is not None:
                return Ending("oom", f"{oom.headline()} · {how}")
            return Ending(_kind_for_code(code), how)
        status = self.meta_status
        if status and status != "running":
            how = _describe_meta_end(status, self.exit_code, self.signal)
            if oom is not None or status == "oom":
                head = oom.headline() if oom is not None else "out of memory"
                return Ending("oom", f"{head} · {how}")
            return Ending(status if status in ("finished", "failed", "killed", "interrupted") else "failed", how)
        exits = [r.exit for r in self.ranks]
        if self.ranks and all(e is not None for e in exits):
            # The processes said goodbye; meta.json is finalized a moment later (or never, if memtop died).
            reasons = sorted({e.reason for e in exits if e is not None})
            if oom is not None or "oom" in reasons:
                head = oom.headline() if oom is not None else "out of memory"
                return Ending("oom", head)
            kind = "failed" if "exception" in reasons else "finished"
            return Ending(kind, "process exited (" + ", ".join(reasons) + ")")
        if self.writer_gone:
            return Ending("lost", "memtop and the training are gone; the run did not end cleanly")
        return None


def _kind_for_code(code: int | None) -> str:
    if code == 0:
        return "finished"
    if code is not None and (code < 0 or code > 128):
        return "killed"
    return "failed"


def _describe_meta_end(status: str, exit_code: int | None, sig: int | None) -> str:
    if status == "interrupted":
        return "interrupted by memtop" + (f" (exit {exit_code})" if exit_code is not None else "")
    if sig:
        return f"killed by {signal_name(sig)}"
    if exit_code is not None:
        return describe_exit_code(exit_code)
    return status


def category_names() -> tuple[str, ...]:
    return tuple(CATEGORIES)
