"""Read a run for analysis fast, however long it is.

JSON-decoding every record of a 100,000-step run takes tens of seconds; the report needs far less.
Each rank file is memory-mapped and every line is scanned cheaply for the few figures that must be
exact (peak or tracked bytes, reserved bytes); only a bounded, evenly spaced subset of step records
is decoded in full, plus the lines that hold the maxima and the last one. The resulting
:class:`RankSeries` are thinned (``sampled`` says so) but their peak, largest reserved, step count
and cache-release count are exact. Non-step records (stages, OOM, warnings, exit) are always
decoded. Every decoded line goes through :func:`memtop.runs.decode.decode_line`; bad lines are
skipped and counted by reason as in :func:`memtop.runs.reader.load_run` (in a sampled read, only
decoded lines can be judged; a line over 1 MiB is never copied). Files are opened through
:mod:`memtop.runs.safeio` (regular files only). This is the only module of the analyzers that does I/O.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from memtop.analyzers.scan_index import (
    MAX_RANGES,
    MIN_INDEXED_BYTES,
    FileKey,
    Range,
    RankIndex,
    on_line_boundaries,
    read_index,
    write_index,
)
from memtop.analyzers.series import RankSeries, build_series, count_releases
from memtop.runs.checks import MAX_INT, MAX_LINE
from memtop.runs.decode import Skip, SkipCounter, decode_line
from memtop.runs.reader import Record, RunData, StepRecord, meta_warnings, rank_files
from memtop.runs.rundir import load_meta
from memtop.runs.safeio import Unreadable, open_regular

MAX_DECODED_STEPS = 600

_STEP_MARKERS = (b'{"type":"step"', b'{"type": "step"')
_KEYS = {
    "peak": re.compile(rb'"peak": ?(\d+|null)'),
    "reserved": re.compile(rb'"reserved": ?(\d+|null)'),
    "tracked": re.compile(rb'"tracked": ?(\d+|null)'),
}
# The run format's writers put reserved right before peak: one pass reads both.
_RESERVED_PEAK = re.compile(rb'"reserved": ?(\d+|null), ?"peak": ?(\d+|null)')

Buffer = bytes | mmap.mmap


@dataclass
class _Lines:
    """Line boundaries in a buffer: step lines, and everything else that is not blank."""

    buf: Buffer
    step_starts: list[int]
    step_ends: list[int]
    other: list[tuple[int, int]]

    def step(self, k: int) -> bytes:
        return bytes(self.buf[self.step_starts[k] : self.step_ends[k]])

    def decode_step(self, k: int) -> Record | Skip:
        if self.step_ends[k] - self.step_starts[k] > MAX_LINE:
            return Skip("too_long")
        return decode_line(self.step(k))


@contextmanager
def _mapped(path: Path) -> Iterator[tuple[Buffer, FileKey]]:
    """The regular file's bytes without copying them (an empty file gives b"") and what identifies
    this version of the file; Unreadable else."""
    with open_regular(path) as fh:
        key = FileKey.of(fh.fileno())
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty file, or a filesystem that cannot map
            yield fh.read(), key
            return
        try:
            yield mm, key
        finally:
            mm.close()


_HEADS = frozenset(m[:14] for m in _STEP_MARKERS)  # the first 14 bytes of a step line, either spacing


def _split(buf: Buffer) -> _Lines:
    """Step lines (by their first bytes) and the other non-blank lines, in one pass of newline finds."""
    n = len(buf)
    find = buf.find
    heads = _HEADS
    starts: list[int] = []
    ends: list[int] = []
    other: list[tuple[int, int]] = []
    pos = 0
    while pos < n:
        end = find(b"\n", pos)
        if end < 0:
            end = n
        if buf[pos : pos + 14] in heads:
            starts.append(pos)
            ends.append(end)
        elif end > pos and (end - pos > MAX_LINE or buf[pos:end].strip()):
            other.append((pos, end))
        pos = end + 1
    return _Lines(buf, starts, ends, other)


def _values(found: list[bytes]) -> list[int | None]:
    """Scanned figures; ``null`` and out-of-range ones (over 2**63, as the decoder judges) are None."""
    if b"null" not in found and max(map(len, found), default=0) < 19:
        return list(map(int, found))
    return [None if v == b"null" or len(v) > 19 or int(v) > MAX_INT else int(v) for v in found]


class _Blobs:
    """The step lines joined into one buffer (their prefixes first), for one regex pass per key."""

    def __init__(self, lines: _Lines, keys: tuple[str, ...]) -> None:
        self.lines = lines
        first = lines.step(0)
        ends = [m.end() for k in keys if (m := _KEYS[k].search(first)) is not None]
        # the keys sit at about the same place on every line of one writer; keep a margin
        self.width = max(ends, default=0) + 128
        self._prefixes: bytes | None = None
        self._whole: bytes | None = None

    def prefixes(self) -> bytes:
        if self._prefixes is None:
            buf, w = self.lines.buf, self.width
            self._prefixes = b"\n".join([buf[s : (e if e - s < w else s + w)] for s, e in zip(self.lines.step_starts, self.lines.step_ends, strict=True)])
        return self._prefixes

    def whole(self) -> bytes:
        if self._whole is None:
            buf = self.lines.buf
            self._whole = b"\n".join([buf[s:e] for s, e in zip(self.lines.step_starts, self.lines.step_ends, strict=True)])
        return self._whole


def _column(blobs: _Blobs, key: str) -> list[int | None] | None:
    """``key``'s value on every step line; used only when every line yields exactly one value
    (else None: the caller decodes lines instead)."""
    pattern = _KEYS[key]
    n = len(blobs.lines.step_starts)
    for blob in (blobs.prefixes, blobs.whole):
        found = pattern.findall(blob())
        if len(found) == n:
            return _values(found)
    return None


def _scan_columns(lines: _Lines) -> tuple[list[int | None], list[int | None]]:
    """(level, reserved) of every step line: level = peak where measured, else tracked."""
    n = len(lines.step_starts)
    if n == 0:
        return [], []
    first = lines.step(0)
    cuda = bool(re.search(rb'"peak": ?\d', first))
    blobs = _Blobs(lines, ("peak", "reserved") if cuda else ("peak", "reserved", "tracked"))
    if cuda:
        pairs = _RESERVED_PEAK.findall(blobs.prefixes())
        if len(pairs) == n:
            return _values([p for _, p in pairs]), _values([r for r, _ in pairs])
    peak = _column(blobs, "peak")
    level: list[int | None] | None = peak
    if peak is None or peak[0] is None:
        tracked = _column(blobs, "tracked")
        level = [p if p is not None else t for p, t in zip(peak, tracked, strict=True)] if peak and tracked else (tracked or peak)
    reserved = _column(blobs, "reserved")
    if level is None:  # an unusual layout: decode every step line (correct, just slower)
        recs = [lines.decode_step(k) for k in range(n)]
        level = [r.level if isinstance(r, StepRecord) else None for r in recs]
        reserved = [r.reserved if isinstance(r, StepRecord) else None for r in recs]
    return level, reserved if reserved is not None else [None] * n


def _argmax(col: list[int | None]) -> int | None:
    vals = [-1 if v is None else v for v in col]
    top = max(vals, default=-1)
    return vals.index(top) if top >= 0 else None


def _picks(n: int, limit: int, level: list[int | None], reserved: list[int | None]) -> list[int]:
    """Step lines to decode: evenly spaced, plus the maxima and the last line."""
    if n <= limit:
        return list(range(n))
    stride = (n - 1) / (limit - 1)
    picks = {round(k * stride) for k in range(limit)}
    for col in (level, reserved):
        i = _argmax(col)
        if i is not None:
            picks.add(i)
    picks.add(n - 1)
    return sorted(picks)


@dataclass
class _Rank:
    steps: list[StepRecord]
    others: list[Record]
    skipped: SkipCounter
    sampled: bool
    releases: int | None
    step_lines: int
    step_ranges: list[Range]  # the step lines decoded, in order (what an index keeps)
    other_ranges: list[Range]


def _decode_other(buf: Buffer, s: int, e: int) -> Record | Skip:
    return Skip("too_long") if e - s > MAX_LINE else decode_line(bytes(buf[s:e]))


def _sort_other(got: Record | Skip, skipped: SkipCounter, steps: list[StepRecord], others: list[Record]) -> None:
    if isinstance(got, Skip):
        if got.reason != "blank":
            skipped[got.reason] += 1
    elif isinstance(got, StepRecord):
        steps.append(got)  # a step record in an unusual layout
    else:
        others.append(got)


def _load_rank(buf: Buffer, limit: int) -> _Rank:
    lines = _split(buf)
    n = len(lines.step_starts)
    level, reserved = _scan_columns(lines)
    skipped = SkipCounter()
    others: list[Record] = []
    steps: list[StepRecord] = []
    for s, e in lines.other:
        _sort_other(_decode_other(buf, s, e), skipped, steps, others)
    picks = _picks(n, limit, level, reserved)
    top = _argmax(level)
    decoded: list[StepRecord] = []
    top_failed = False
    lines_tried = list(picks)
    for k in picks:
        got = lines.decode_step(k)
        if not isinstance(got, StepRecord):
            skipped[got.reason if isinstance(got, Skip) else "bad_value"] += 1
            top_failed = top_failed or k == top
        else:
            decoded.append(got)
    if top_failed:
        # the largest line does not decode (a truncated last line): take the largest that does
        remaining = list(level)
        tried = set(picks)
        while (j := _argmax(remaining)) is not None:
            remaining[j] = None
            if j in tried:
                continue
            got = lines.decode_step(j)
            lines_tried.append(j)
            if isinstance(got, StepRecord):
                decoded.append(got)
                break
            skipped[got.reason if isinstance(got, Skip) else "bad_value"] += 1
    sampled = len(picks) < n
    return _Rank(
        steps=[*decoded, *steps],
        others=others,
        skipped=skipped,
        sampled=sampled,
        releases=count_releases(reserved) if sampled else None,
        step_lines=n + len(steps),
        step_ranges=[(lines.step_starts[k], lines.step_ends[k]) for k in lines_tried],
        other_ranges=list(lines.other),
    )


def _from_index(buf: Buffer, idx: RankIndex) -> _Rank:
    """The same result as :func:`_load_rank` gave when it wrote ``idx``, decoding only its lines."""
    skipped = SkipCounter()
    others: list[Record] = []
    steps: list[StepRecord] = []
    for s, e in idx.others:
        _sort_other(_decode_other(buf, s, e), skipped, steps, others)
    decoded: list[StepRecord] = []
    for s, e in idx.steps:
        got = _decode_other(buf, s, e)
        if isinstance(got, StepRecord):
            decoded.append(got)
        else:
            skipped[got.reason if isinstance(got, Skip) else "bad_value"] += 1
    return _Rank(
        steps=[*decoded, *steps],
        others=others,
        skipped=skipped,
        sampled=idx.sampled,
        releases=idx.releases,
        step_lines=idx.step_lines,
        step_ranges=list(idx.steps),
        other_ranges=list(idx.others),
    )


def _usable(idx: RankIndex | None, key: FileKey, limit: int, buf: Buffer) -> bool:
    return (
        idx is not None
        and idx.key == key
        and idx.limit == limit
        and len(buf) == key.size
        and on_line_boundaries(buf, idx.steps + idx.others, key.size)
    )


def _index_of(got: _Rank, key: FileKey, limit: int) -> RankIndex | None:
    if key.size < MIN_INDEXED_BYTES or len(got.other_ranges) > MAX_RANGES or len(got.step_ranges) > MAX_RANGES:
        return None
    return RankIndex(
        key=key,
        limit=limit,
        step_lines=got.step_lines,
        releases=got.releases,
        sampled=got.sampled,
        steps=tuple(got.step_ranges),
        others=tuple(got.other_ranges),
    )


def load_for_analysis(run_dir: Path, limit: int = MAX_DECODED_STEPS, save_index: bool = True, use_index: bool = True) -> tuple[RunData, dict[int, RankSeries]]:
    """The run (meta, non-step records, the decoded step records) and its per-rank series.

    A rank file that ``analysis-index.json`` describes as it is now (:mod:`memtop.analyzers.scan_index`)
    is read through the index, which gives the same result as a scan; otherwise it is scanned, and
    a long file's scan is saved in the index (``save_index``; ``use_index=False`` always scans; best effort: a read-only run
    directory is simply scanned each time). Never raises for bad content; unreadable files become
    warnings.
    """
    meta, why = load_meta(run_dir)
    run = RunData(path=run_dir, meta=meta)
    run.warnings.extend(meta_warnings(run_dir, meta, why))
    series: dict[int, RankSeries] = {}
    index = read_index(run_dir) if use_index else {}
    new_index: dict[str, list[RankIndex]] = {}
    changed = False
    for rank, path in rank_files(run_dir).items():
        try:
            with _mapped(path) as (buf, key):
                entries = index.get(path.name, [])
                idx = next((e for e in entries if e.limit == limit), None)
                if idx is not None and _usable(idx, key, limit, buf):
                    got = _from_index(buf, idx)
                    new_index[path.name] = entries
                else:
                    got = _load_rank(buf, limit)
                    fresh = _index_of(got, key, limit)
                    changed = changed or bool(entries) or fresh is not None
                    kept = [e for e in entries if e.key == key and e.limit != limit]
                    if fresh is not None:
                        new_index[path.name] = [fresh, *kept]
        except Unreadable as exc:
            run.warnings.append(f"{path.name}: {exc.why}: skipped")
            continue
        except OSError as exc:
            run.warnings.append(f"{path.name}: cannot be read ({exc.strerror or exc})")
            continue
        run.records[rank] = [*got.others, *got.steps]
        run.count_skips(got.skipped)
        s = build_series(rank, got.steps)
        if s is not None:
            s.sampled = got.sampled
            if got.releases is not None:
                s.cache_releases = got.releases
            s.total_steps = got.step_lines if got.sampled else len(s.steps)
            series[rank] = s
    if save_index and changed:
        write_index(run_dir, new_index)
    run.finish_warnings()
    return run, series


def index_long_run(run_dir: Path) -> bool:
    """Scan a finished run's long rank files now and save the scan (:mod:`memtop.analyzers.scan_index`),
    so that its first ``memtop analyze`` reads a few hundred lines instead of the whole file.
    Does nothing (False) when every rank file is short. Never raises."""
    try:
        long = any(p.stat().st_size >= MIN_INDEXED_BYTES for p in rank_files(run_dir).values())
        if long:
            load_for_analysis(run_dir)
    except OSError:
        return False
    return long
