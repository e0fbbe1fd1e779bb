"""The dashboard's only way into a run: a reader that tails its files and returns immutable snapshots.

:class:`RunReader` is the interface (tests hand the app a fake one); :class:`FileRunReader` tails
``rank<N>.jsonl`` with :class:`memtop.runs.reader.RankTail`, re-reads ``meta.json`` when it changes
and keeps the last lines of ``output.log`` (every file opened through :mod:`memtop.runs.safeio`:
regular files only, never blocking). It is called from the poller thread only, never from
the UI thread. Memory stays bounded however long the run: the timeline is decimated
(:mod:`memtop.tui.history`) and only a window of raw records is kept for the advisor.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from memtop.runs.decode import Skip, StepRebuilder
from memtop.runs.format import CATEGORIES, META_FILE, OUTPUT_LOG
from memtop.runs.reader import RankTail, Record, RunData, rank_files
from memtop.runs.recordfiles import file_label
from memtop.runs.records import (
    Categories,
    ExitRecord,
    LargeTensor,
    OomRecord,
    RunMeta,
    StageRecord,
    StepRecord,
    WarningRecord,
)
from memtop.runs.rundir import load_meta
from memtop.runs.safeio import open_regular
from memtop.runs.status import LOST, run_status
from memtop.tui.history import DecimatedSeries
from memtop.tui.snapshot import (
    HISTORY_FIELDS,
    DeviceInfo,
    ExitView,
    OomView,
    RankSnapshot,
    RunSnapshot,
    StepView,
    TensorRow,
)
from memtop.tui.suggestions import SuggestFn, SuggestionCache

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


class RunReader(Protocol):
    """What the dashboard needs from a run. Implementations are polled from one worker thread."""

    def poll(self, final: bool = False) -> RunSnapshot:
        """Read what is new and return the whole current picture. ``final``: the writer has ended."""
        ...

    @property
    def behind(self) -> bool:
        """True while there is more already written than read (poll again without waiting)."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Views of typed records (validated by memtop.runs.decode: every figure is an int/float or None).


def _categories(cats: Categories) -> tuple[tuple[str, int | None], ...]:
    return tuple((name, getattr(cats, name)) for name in CATEGORIES)


def _tensors(items: tuple[LargeTensor, ...]) -> tuple[TensorRow, ...]:
    rows = [TensorRow(name=t.name, category=t.category, bytes=t.bytes, shape=t.shape, dtype=t.dtype.removeprefix("torch.")) for t in items]
    rows.sort(key=lambda r: r.bytes, reverse=True)
    return tuple(rows)


def step_view(rec: StepRecord) -> StepView:
    cats = _categories(rec.categories)
    tracked = rec.tracked
    if tracked is None:
        known = [v for k, v in cats if k != "other" and v is not None]
        tracked = sum(known) if known else None
    return StepView(
        step=rec.step,
        time=rec.time,
        device=rec.device or "?",
        step_time=rec.step_time,
        allocated=rec.allocated,
        reserved=rec.reserved,
        peak=rec.peak,
        device_used=rec.device_used,
        device_total=rec.device_total,
        fragmentation_bytes=rec.fragmentation_bytes,
        fragmentation_pct=rec.fragmentation_pct,
        inactive_split_bytes=rec.inactive_split_bytes,
        categories=cats,
        peak_point=rec.peak_point,
        tracked=tracked,
        activations_step=rec.activations_step,
        sample_every=rec.sample_every,
        large_tensors=_tensors(rec.large_tensors),
        highwater=tuple(rec.highwater._asdict().items()) if rec.highwater is not None else (),
    )


def oom_view(rec: OomRecord) -> OomView:
    return OomView(
        step=rec.step,
        message=rec.message,
        requested_bytes=rec.requested_bytes,
        allocated=rec.allocated,
        reserved=rec.reserved,
        device_free=rec.device_free,
        categories=_categories(rec.categories),
        large_tensors=_tensors(rec.large_tensors),
    )


def _max_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _slope_per_100(points: deque[tuple[int, float]]) -> float | None:
    """Least-squares slope of (step, pct) in points per 100 steps; None with too few points."""
    n = len(points)
    if n < 8:
        return None
    mean_x = sum(p[0] for p in points) / n
    mean_y = sum(p[1] for p in points) / n
    var = sum((p[0] - mean_x) ** 2 for p in points)
    if var <= 0:
        return None
    cov = sum((p[0] - mean_x) * (p[1] - mean_y) for p in points)
    return 100.0 * cov / var


# ---------------------------------------------------------------------------------------------


class RankState:
    """Everything kept about one rank: O(history capacity + window), whatever the run's length."""

    FIRST_STEPS = 16

    def __init__(self, rank: int, *, history_points: int, window: int, other_window: int = 256) -> None:
        self.rank = rank
        self.device = "?"
        self.steps_seen = 0
        self.last_raw: StepRecord | None = None
        self.max_peak: int | None = None
        self.max_peak_step: int | None = None
        self.history = DecimatedSeries(HISTORY_FIELDS, capacity=history_points)
        self.frag_points: deque[tuple[int, float]] = deque(maxlen=200)
        self.times: deque[tuple[int, float]] = deque(maxlen=32)
        self.first_steps: list[Record] = []
        self.recent_steps: deque[Record] = deque(maxlen=window)
        self.others: deque[Record] = deque(maxlen=other_window)
        self.oom: OomRecord | None = None
        self.exit: ExitRecord | None = None
        self.last_stage: str | None = None
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.warnings: deque[str] = deque(maxlen=8)
        self._cached: RankSnapshot | None = None

    def ingest(self, rec: Record) -> None:
        self._cached = None
        t = rec.time
        if t is not None:
            if self.first_time is None:
                self.first_time = t
            self.last_time = t if self.last_time is None else max(self.last_time, t)
        if isinstance(rec, StepRecord):
            self._ingest_step(rec, t)
            return
        self.others.append(rec)
        if isinstance(rec, OomRecord):
            self.oom = rec
        elif isinstance(rec, ExitRecord):
            self.exit = rec
        elif isinstance(rec, StageRecord):
            self.last_stage = rec.name or None
        elif isinstance(rec, WarningRecord):
            self.warnings.append(rec.message or "(warning without a message)")

    def _ingest_step(self, rec: StepRecord, t: float | None) -> None:
        step = rec.step
        self.steps_seen += 1
        self.last_raw = rec
        self.device = rec.device or self.device
        peak = rec.peak
        if peak is not None and (self.max_peak is None or peak > self.max_peak):
            self.max_peak, self.max_peak_step = peak, step
        tracked = rec.tracked if rec.tracked is not None else rec.categories.tracked()
        frag = rec.fragmentation_pct
        self.history.add(step, (rec.allocated, rec.reserved, peak, rec.device_used, tracked, frag))
        if frag is not None:
            self.frag_points.append((step, frag))
        if t is not None:
            self.times.append((step, t))
        if len(self.first_steps) < self.FIRST_STEPS:
            self.first_steps.append(rec)
        else:
            self.recent_steps.append(rec)

    def step_rate(self) -> float | None:
        if len(self.times) >= 2:
            (s0, t0), (s1, t1) = self.times[0], self.times[-1]
            if s1 > s0 and t1 >= t0:
                return (t1 - t0) / (s1 - s0)
        if self.last_raw is not None:
            return self.last_raw.step_time
        return None

    def snapshot(self) -> RankSnapshot:
        if self._cached is None:
            exit_rec = self.exit
            self._cached = RankSnapshot(
                rank=self.rank,
                device=self.device,
                steps_seen=self.steps_seen,
                last=step_view(self.last_raw) if self.last_raw is not None else None,
                max_peak=self.max_peak,
                max_peak_step=self.max_peak_step,
                history=self.history.points(),
                frag_trend=_slope_per_100(self.frag_points),
                step_rate=self.step_rate(),
                oom=oom_view(self.oom) if self.oom is not None else None,
                exit=ExitView(reason=exit_rec.reason or "normal", exception=exit_rec.exception, steps=exit_rec.steps)
                if exit_rec is not None
                else None,
                last_stage=self.last_stage,
            )
        return self._cached

    def window_records(self) -> list[Record]:
        recs = [*self.first_steps, *self.recent_steps, *self.others]
        recs.sort(key=lambda r: r.time or 0.0)
        return recs


def read_tail_records(path: Path, nbytes: int) -> tuple[list[Record], int]:
    """The complete records in the last ``nbytes`` of ``path``, and the file size they end at."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - nbytes)
            fh.seek(start)
            data = fh.read(size - start)
    except OSError:  # Unreadable included
        return [], 0
    lines = data.split(b"\n")
    if start > 0 and lines:
        lines.pop(0)  # began mid-line
    end = size - len(lines.pop()) if lines else size  # an incomplete last line is left for later
    rebuild = StepRebuilder()  # step deltas before the window's first full record are left out
    records = [rec for rec in (rebuild.decode(raw) for raw in lines if raw.strip()) if not isinstance(rec, Skip)]
    return records, end


class LogTail:
    """The last lines of ``output.log`` (the child's stdout+stderr), read incrementally.

    Progress bars rewrite their line with ``\\r``; only the text after the last ``\\r`` of a line
    is kept. Colour codes are stripped (the log panel shows plain text).
    """

    START_BACK = 256 * 1024

    def __init__(self, path: Path, keep: int = 300) -> None:
        self.path = path
        self.lines: deque[str] = deque(maxlen=keep)
        self.total = 0
        self.offset: int | None = None
        self._partial = b""
        self.exists = False

    def poll(self, final: bool = False, max_bytes: int = 4 * 1024 * 1024) -> bool:
        try:
            with open_regular(self.path) as fh:
                self.exists = True
                if self.offset is None:
                    size = os.fstat(fh.fileno()).st_size
                    self.offset = max(0, size - self.START_BACK)
                    skip_first = self.offset > 0
                else:
                    skip_first = False
                    if os.fstat(fh.fileno()).st_size < self.offset:
                        self.offset, self._partial = 0, b""  # truncated / rewritten
                fh.seek(self.offset)
                chunk = fh.read(max_bytes)
        except OSError:
            return False
        self.offset += len(chunk)
        data = self._partial + chunk
        parts = data.split(b"\n")
        self._partial = parts.pop()
        if skip_first and parts:
            parts.pop(0)  # we started mid-line
        if final and self._partial:
            parts.append(self._partial)
            self._partial = b""
        for raw in parts:
            text = raw.decode("utf-8", errors="replace")
            if "\r" in text:
                pieces = [p for p in text.split("\r") if p.strip()]
                text = pieces[-1] if pieces else ""
            text = _ANSI_RE.sub("", text).replace("\t", "    ")
            self.lines.append(text)
            self.total += 1
        return bool(parts)


@dataclass
class _MetaCache:
    stamp: tuple[int, int] | None = None
    data: RunMeta | None = None


class FileRunReader:
    """Tails a run directory. One instance per dashboard; call :meth:`poll` from one thread only."""

    def __init__(
        self,
        run_dir: Path,
        *,
        suggest: SuggestFn | None | str = "auto",
        suggest_every: float = 5.0,
        chunk_bytes: int = 1024 * 1024,
        history_points: int = 1024,
        window: int = 256,
        log_keep: int = 300,
        monotonic: Callable[[], float] = time.monotonic,
        preview_over: int = 32 * 1024 * 1024,
    ) -> None:
        self.run_dir = Path(run_dir)
        self._chunk = chunk_bytes
        self._history_points = history_points
        self._window = window
        self._tails: dict[int, RankTail] = {}
        self._ranks: dict[int, RankState] = {}
        # A long run opened cold: its last records, shown while the file is read from the start.
        self._previews: dict[int, tuple[RankState, int]] = {}
        self._preview_over = preview_over
        self._log = LogTail(self.run_dir / OUTPUT_LOG, keep=log_keep)
        self._meta = _MetaCache()
        self._suggestions = SuggestionCache(suggest, every=suggest_every, monotonic=monotonic)
        self._version = 0
        self._data_version = 0
        self._behind = False
        self._progress: float | None = None
        self._last: RunSnapshot | None = None
        self._host = socket.gethostname()
        self._gone = False

    # -- RunReader -------------------------------------------------------------------------------

    @property
    def behind(self) -> bool:
        return self._behind

    def close(self) -> None:
        self._tails.clear()

    def poll(self, final: bool = False) -> RunSnapshot:
        changed = self._poll_meta()
        changed |= self._poll_ranks(final)
        changed |= self._log.poll(final=final)
        gone = self._writer_gone(self._meta.data) if self._meta.data else False
        if gone != self._gone:
            self._gone = gone
            changed = True
        if changed:
            self._data_version += 1
        # The first picture goes out before the advisor runs (first paint); it runs on the next poll,
        # a refresh later, not at once: its import and first run would compete with the first paint.
        first = self._last is None
        if not first and not self._behind and self._suggestions.due(self._data_version, force=final):
            changed |= self._suggestions.update(self._data_version, self.run_data)
        if changed or self._last is None:
            self._version += 1
            self._last = self._build()
        return self._last

    # -- reading -----------------------------------------------------------------------------------

    def _poll_meta(self) -> bool:
        try:
            st = (self.run_dir / META_FILE).stat()
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._meta.stamp:
            return False
        data = load_meta(self.run_dir)[0]
        if data is None:
            return False  # mid-replace or garbage; try again next poll
        self._meta = _MetaCache(stamp, data)
        return True

    def _poll_ranks(self, final: bool) -> bool:
        for rank, path in rank_files(self.run_dir).items():
            if rank not in self._tails:
                self._tails[rank] = RankTail(path)
                self._ranks[rank] = RankState(rank, history_points=self._history_points, window=self._window)
                self._start_preview(rank, path)
        changed = False
        behind = False
        for rank, tail in self._tails.items():
            before = tail.offset
            records = tail.poll(max_bytes=self._chunk, final=final)
            state = self._ranks[rank]
            for rec in records:
                state.ingest(rec)
            if records or tail.offset != before:
                changed = True
            if tail.offset - before >= self._chunk:
                behind = True
            preview = self._previews.get(rank)
            if preview is not None and tail.offset >= preview[1]:
                del self._previews[rank]  # the full read has caught up with what the preview showed
                changed = True
        self._behind = behind
        self._progress = self._read_fraction() if behind else None
        return changed

    def _read_fraction(self) -> float | None:
        """How much of the rank files has been read (for the header while a long run loads)."""
        done = total = 0
        for tail in self._tails.values():
            try:
                size = tail.path.stat().st_size
            except OSError:
                continue
            done += min(tail.offset, size)
            total += size
        return done / total if total else None

    def _start_preview(self, rank: int, path: Path) -> None:
        """For a rank file too big to read at once: its current state now, its history as it is read."""
        try:
            size = path.stat().st_size
        except OSError:
            return
        if size <= self._preview_over:
            return
        records, end = read_tail_records(path, 512 * 1024)
        if not records:
            return
        state = RankState(rank, history_points=64, window=8)
        for rec in records:
            state.ingest(rec)
        self._previews[rank] = (state, end)

    def _rank_snapshot(self, rank: int, state: RankState) -> RankSnapshot:
        preview = self._previews.get(rank)
        full = state.snapshot()
        if preview is None:
            return full
        # The latest figures from the preview; the timeline (and peak so far) from what is read.
        shown = preview[0].snapshot()
        return dataclasses.replace(
            shown,
            steps_seen=full.steps_seen,
            history=full.history,
            max_peak=_max_opt(full.max_peak, shown.max_peak),
            max_peak_step=full.max_peak_step if (full.max_peak or 0) >= (shown.max_peak or 0) else shown.max_peak_step,
        )

    # -- building ------------------------------------------------------------------------------------

    def run_data(self) -> RunData:
        """A bounded window of the run as :class:`RunData` (what the advisor reads)."""
        data = RunData(path=self.run_dir, meta=self._meta.data)
        for rank, state in self._ranks.items():
            data.records[rank] = state.window_records()
        data.bad_lines = sum(t.bad_lines for t in self._tails.values())
        return data

    def _writer_gone(self, meta: RunMeta) -> bool:
        return run_status(self.run_dir, meta) == LOST

    def _build(self) -> RunSnapshot:
        meta = self._meta.data or RunMeta()
        devices = [DeviceInfo(index=d.index, name=d.name or "?", total_bytes=d.total_bytes, kind=d.kind if d.kind != "unknown" else "cuda") for d in meta.devices]
        # a rank file that cannot be read (a FIFO, a device, no permission) is a warning, not a rank
        unread = {rank for rank, tail in self._tails.items() if tail.error and not self._ranks[rank].steps_seen and not self._ranks[rank].others}
        ranks = tuple(self._rank_snapshot(rank, state) for rank, state in sorted(self._ranks.items()) if rank not in unread)
        firsts = [s.first_time for s in self._ranks.values() if s.first_time is not None]
        lasts = [s.last_time for s in self._ranks.values() if s.last_time is not None]
        lasts += [p.last_time for p, _ in self._previews.values() if p.last_time is not None]
        warnings: list[str] = [e for rank in sorted(unread) if (e := self._tails[rank].error)]
        for rank, state in sorted(self._ranks.items()):
            prefix = f"{file_label(rank)}: " if len(self._ranks) > 1 else ""
            warnings.extend(prefix + w for w in state.warnings)
        return RunSnapshot(
            run_dir=str(self.run_dir),
            run_id=meta.run_id or self.run_dir.name,
            command=meta.command,
            host=meta.host,
            devices=tuple(devices),
            started_at=meta.started_at,
            ended_at=meta.ended_at,
            meta_status=meta.status,
            exit_code=meta.exit_code,
            signal=meta.signal,
            max_steps=meta.max_steps,
            first_time=min(firsts) if firsts else None,
            last_time=max(lasts) if lasts else None,
            ranks=ranks,
            warnings=tuple(warnings[-8:]),
            log_lines=tuple(self._log.lines),
            log_total=self._log.total,
            has_log=self._log.exists,
            suggestions=self._suggestions.view,
            writer_gone=self._gone,
            bad_lines=sum(t.bad_lines for t in self._tails.values()),
            behind=self._behind,
            progress=self._progress,
            version=self._version,
        )
