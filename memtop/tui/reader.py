"""The dashboard's only way into a run: a reader that tails its files and returns immutable snapshots.

:class:`RunReader` is the interface (tests hand the app a fake one); :class:`FileRunReader` tails
``rank<N>.jsonl`` with :class:`memtop.runs.reader.RankTail`, re-reads ``meta.json`` when it changes
and keeps the last lines of ``output.log``. It is called from the poller thread only, never from
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
from typing import Any, Protocol

from memtop.runs.format import CATEGORIES, META_FILE, OUTPUT_LOG
from memtop.runs.reader import RankTail, Record, RunData, parse_line, rank_files
from memtop.runs.rundir import read_meta
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
# Typed access to lenient records (a record from disk may hold anything).


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _categories(value: Any) -> tuple[tuple[str, int | None], ...]:
    cats = value if isinstance(value, dict) else {}
    return tuple((name, _int(cats.get(name))) for name in CATEGORIES)


def _tensors(value: Any) -> tuple[TensorRow, ...]:
    rows: list[TensorRow] = []
    if not isinstance(value, list):
        return ()
    for item in value:
        if not isinstance(item, dict):
            continue
        size = _int(item.get("bytes"))
        if size is None:
            continue
        shape = item.get("shape")
        dims = tuple(d for d in (_int(x) for x in shape) if d is not None) if isinstance(shape, list) else ()
        rows.append(
            TensorRow(
                name=_str(item.get("name"), "?"),
                category=_str(item.get("category"), "?"),
                bytes=size,
                shape=dims,
                dtype=_str(item.get("dtype")).removeprefix("torch."),
            )
        )
    rows.sort(key=lambda r: r.bytes, reverse=True)
    return tuple(rows)


def step_view(rec: Record) -> StepView:
    cats = _categories(rec.get("categories"))
    tracked = _int(rec.get("tracked"))
    if tracked is None:
        known = [v for k, v in cats if k != "other" and v is not None]
        tracked = sum(known) if known else None
    return StepView(
        step=_int(rec.get("step")) or 0,
        time=_float(rec.get("time")),
        device=_str(rec.get("device"), "?"),
        step_time=_float(rec.get("step_time")),
        allocated=_int(rec.get("allocated")),
        reserved=_int(rec.get("reserved")),
        peak=_int(rec.get("peak")),
        device_used=_int(rec.get("device_used")),
        device_total=_int(rec.get("device_total")),
        fragmentation_bytes=_int(rec.get("fragmentation_bytes")),
        fragmentation_pct=_float(rec.get("fragmentation_pct")),
        inactive_split_bytes=_int(rec.get("inactive_split_bytes")),
        categories=cats,
        peak_point=rec.get("peak_point") if isinstance(rec.get("peak_point"), str) else None,
        tracked=tracked,
        activations_step=_int(rec.get("activations_step")),
        sample_every=_int(rec.get("sample_every")),
        large_tensors=_tensors(rec.get("large_tensors")),
    )


def oom_view(rec: Record) -> OomView:
    return OomView(
        step=_int(rec.get("step")),
        message=_str(rec.get("message")),
        requested_bytes=_int(rec.get("requested_bytes")),
        allocated=_int(rec.get("allocated")),
        reserved=_int(rec.get("reserved")),
        device_free=_int(rec.get("device_free")),
        categories=_categories(rec.get("categories")),
        large_tensors=_tensors(rec.get("large_tensors")),
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
        self.last_raw: Record | None = None
        self.max_peak: int | None = None
        self.max_peak_step: int | None = None
        self.history = DecimatedSeries(HISTORY_FIELDS, capacity=history_points)
        self.frag_points: deque[tuple[int, float]] = deque(maxlen=200)
        self.times: deque[tuple[int, float]] = deque(maxlen=32)
        self.first_steps: list[Record] = []
        self.recent_steps: deque[Record] = deque(maxlen=window)
        self.others: deque[Record] = deque(maxlen=other_window)
        self.oom: Record | None = None
        self.exit: Record | None = None
        self.last_stage: str | None = None
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.warnings: deque[str] = deque(maxlen=8)
        self._cached: RankSnapshot | None = None

    def ingest(self, rec: Record) -> None:
        self._cached = None
        t = _float(rec.get("time"))
        if t is not None:
            if self.first_time is None:
                self.first_time = t
            self.last_time = t if self.last_time is None else max(self.last_time, t)
        kind = rec.get("type")
        if kind == "step":
            self._ingest_step(rec, t)
            return
        self.others.append(rec)
        if kind == "oom":
            self.oom = rec
        elif kind == "exit":
            self.exit = rec
        elif kind == "stage":
            self.last_stage = _str(rec.get("name")) or None
        elif kind == "warning":
            self.warnings.append(_str(rec.get("message"), "(warning without a message)"))

    def _ingest_step(self, rec: Record, t: float | None) -> None:
        step = _int(rec.get("step"))
        if step is None:
            return
        self.steps_seen += 1
        self.last_raw = rec
        self.device = _str(rec.get("device"), self.device)
        peak = _int(rec.get("peak"))
        if peak is not None and (self.max_peak is None or peak > self.max_peak):
            self.max_peak, self.max_peak_step = peak, step
        tracked = _int(rec.get("tracked"))
        if tracked is None:
            cats = rec.get("categories")
            if isinstance(cats, dict):
                vals = [_int(cats.get(c)) for c in CATEGORIES[:4]]
                tracked = sum(v for v in vals if v is not None)
        frag = _float(rec.get("fragmentation_pct"))
        self.history.add(
            step,
            (
                _int(rec.get("allocated")),
                _int(rec.get("reserved")),
                peak,
                _int(rec.get("device_used")),
                tracked,
                frag,
            ),
        )
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
            return _float(self.last_raw.get("step_time"))
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
                exit=ExitView(
                    reason=_str(exit_rec.get("reason"), "normal"),
                    exception=exit_rec.get("exception") if isinstance(exit_rec.get("exception"), str) else None,
                    steps=_int(exit_rec.get("steps")),
                )
                if exit_rec is not None
                else None,
                last_stage=self.last_stage,
            )
        return self._cached

    def window_records(self) -> list[Record]:
        recs = [*self.first_steps, *self.recent_steps, *self.others]
        recs.sort(key=lambda r: _float(r.get("time")) or 0.0)
        return recs


def read_tail_records(path: Path, nbytes: int) -> tuple[list[Record], int]:
    """The complete records in the last ``nbytes`` of ``path``, and the file size they end at."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - nbytes)
            fh.seek(start)
            data = fh.read(size - start)
    except OSError:
        return [], 0
    lines = data.split(b"\n")
    if start > 0 and lines:
        lines.pop(0)  # began mid-line
    end = size - len(lines.pop()) if lines else size  # an incomplete last line is left for later
    records = [rec for rec in (parse_line(raw) for raw in lines if raw.strip()) if rec is not None]
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
            with open(self.path, "rb") as fh:
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
    data: dict[str, Any] | None = None


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
        data = read_meta(self.run_dir)
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

    def _writer_gone(self, meta: dict[str, Any]) -> bool:
        return run_status(self.run_dir, meta) == LOST

    def _build(self) -> RunSnapshot:
        meta = self._meta.data or {}
        command = meta.get("command")
        devices_raw = meta.get("devices")
        devices: list[DeviceInfo] = []
        if isinstance(devices_raw, list):
            for d in devices_raw:
                if isinstance(d, dict):
                    devices.append(
                        DeviceInfo(
                            index=_int(d.get("index")),
                            name=_str(d.get("name"), "?"),
                            total_bytes=_int(d.get("total_bytes")),
                            kind=_str(d.get("kind"), "cuda"),
                        )
                    )
        ranks = tuple(self._rank_snapshot(rank, state) for rank, state in sorted(self._ranks.items()))
        firsts = [s.first_time for s in self._ranks.values() if s.first_time is not None]
        lasts = [s.last_time for s in self._ranks.values() if s.last_time is not None]
        lasts += [p.last_time for p, _ in self._previews.values() if p.last_time is not None]
        warnings: list[str] = []
        for rank, state in sorted(self._ranks.items()):
            prefix = f"rank {rank}: " if len(self._ranks) > 1 else ""
            warnings.extend(prefix + w for w in state.warnings)
        return RunSnapshot(
            run_dir=str(self.run_dir),
            run_id=_str(meta.get("run_id"), self.run_dir.name),
            command=tuple(str(c) for c in command) if isinstance(command, list) else (),
            host=meta.get("host") if isinstance(meta.get("host"), str) else None,
            devices=tuple(devices),
            started_at=_float(meta.get("started_at")),
            ended_at=_float(meta.get("ended_at")),
            meta_status=meta.get("status") if isinstance(meta.get("status"), str) else None,
            exit_code=_int(meta.get("exit_code")),
            signal=_int(meta.get("signal")),
            max_steps=_int(meta.get("max_steps")),
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
