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

from memtop.analyzers.hook_index import MARK_EVERY, Chunk, index_path, is_step_line, read_hook_index
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
from memtop.runs.decode import DELTA_HEAD, Skip, SkipCounter, decode_delta_line, decode_line
from memtop.runs.reader import Record, RunData, StepRecord, meta_warnings, rank_files
from memtop.runs.rundir import load_meta
from memtop.runs.safeio import Unreadable, open_regular

MAX_DECODED_STEPS = 600
FULL_EVERY = 256  # the hook writes the step lines whose index is a multiple of this as full records (memtop.profiler.step_delta)
BASE_WINDOW = 8 * 1024 * 1024  # how far before a step delta its full record is looked for

_STEP_MARKERS = (b'{"type":"step"', b'{"type": "step"')
_KEYS = {
    "peak": re.compile(rb'"peak": ?(\d+|null)'),
    "reserved": re.compile(rb'"reserved": ?(\d+|null)'),
    "tracked": re.compile(rb'"tracked": ?(\d+|null)'),
}
# The run format's writers put reserved right before peak: one pass reads both.
_RESERVED_PEAK = re.compile(rb'"reserved": ?(\d+|null), ?"peak": ?(\d+|null)')

Buffer = bytes | mmap.mmap


class _Decoder:
    """Decodes lines anywhere in a rank file: a step delta (run format v2) is rebuilt over the
    nearest full step record before it (found by its first bytes, decoded once and kept), which is
    the base :class:`memtop.runs.decode.StepRebuilder` would use reading the file in order."""

    def __init__(self, buf: Buffer) -> None:
        self.buf = buf
        self._bases: dict[int, StepRecord | None] = {}

    def __call__(self, s: int, e: int) -> Record | Skip:
        buf = self.buf
        if e - s > MAX_LINE:
            return Skip("too_long")
        m = DELTA_HEAD.match(buf, s, e)
        if m is None:
            return decode_line(bytes(buf[s:e]))
        head = b'\n{"type":"step","schema":' + m.group(1) + b',"rank":'
        lo = max(0, s - BASE_WINDOW)
        j = buf.rfind(head, lo, s)
        start = j + 1 if j >= 0 else (0 if lo == 0 and buf[: len(head) - 1] == head[1:] else -1)
        base: StepRecord | None = None
        if start >= 0:
            if start in self._bases:
                base = self._bases[start]
            else:
                end = buf.find(b"\n", start, s)
                got = Skip("too_long") if end < 0 or end - start > MAX_LINE else decode_line(bytes(buf[start:end]))
                base = self._bases[start] = got if isinstance(got, StepRecord) else None
        return decode_delta_line(bytes(buf[s:e]), base)


@dataclass
class _Lines:
    """Line boundaries in a buffer: step lines, and everything else that is not blank."""

    buf: Buffer
    step_starts: list[int]
    step_ends: list[int]
    other: list[tuple[int, int]]
    decoder: _Decoder

    def step(self, k: int) -> bytes:
        return bytes(self.buf[self.step_starts[k] : self.step_ends[k]])

    def decode_step(self, k: int) -> Record | Skip:
        return self.decoder(self.step_starts[k], self.step_ends[k])


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


def _split(buf: Buffer, decoder: _Decoder, pos: int = 0, n: int | None = None) -> _Lines:
    """Step lines (by their first bytes) and the other non-blank lines of ``buf[pos:n]`` (offsets
    in ``buf``), in one pass of newline finds."""
    n = len(buf) if n is None else n
    find = buf.find
    heads = _HEADS
    starts: list[int] = []
    ends: list[int] = []
    other: list[tuple[int, int]] = []
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
    return _Lines(buf, starts, ends, other, decoder)


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
            peaks = _values([p for _, p in pairs])
            if None not in peaks:  # else: a step without a peak reads its tracked bytes, below
                return peaks, _values([r for r, _ in pairs])
    peak = _column(blobs, "peak")
    level: list[int | None] | None = peak
    if peak is None or None in peak:  # level = peak where measured, else tracked, line by line
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


def grid(n: int, limit: int) -> int | None:
    """The spacing of the step lines a long file's analysis decodes (multiples of the step index
    the hook's index marks), or None when the file is too short for it (evenly spaced picks)."""
    if n < MARK_EVERY * limit:
        return None
    g = MARK_EVERY * -(-n // (MARK_EVERY * limit))
    if g >= FULL_EVERY:  # a multiple of the hook's full-record spacing: the picks are full records
        g = FULL_EVERY * -(-n // (FULL_EVERY * limit))
    return g


def _spaced(n: int, limit: int) -> set[int]:
    """Step lines to decode before the maxima and the last line are added."""
    if n <= limit:
        return set(range(n))
    g = grid(n, limit)
    if g is not None:
        return set(range(0, n, g))
    stride = (n - 1) / (limit - 1)
    return {round(k * stride) for k in range(limit)}


def _picks(n: int, limit: int, level: list[int | None], reserved: list[int | None]) -> list[int]:
    """Step lines to decode: evenly spaced, plus the maxima and the last line."""
    picks = _spaced(n, limit)
    if n <= limit:
        return sorted(picks)
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




def _sort_other(got: Record | Skip, skipped: SkipCounter, steps: list[StepRecord], others: list[Record]) -> None:
    if isinstance(got, Skip):
        if got.reason != "blank":
            skipped[got.reason] += 1
    elif isinstance(got, StepRecord):
        steps.append(got)  # a step record in an unusual layout
    else:
        others.append(got)


def _load_rank(buf: Buffer, limit: int) -> _Rank:
    decode = _Decoder(buf)
    lines = _split(buf, decode)
    n = len(lines.step_starts)
    level, reserved = _scan_columns(lines)
    skipped = SkipCounter()
    others: list[Record] = []
    steps: list[StepRecord] = []
    for s, e in lines.other:
        _sort_other(decode(s, e), skipped, steps, others)
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
    decode = _Decoder(buf)
    skipped = SkipCounter()
    others: list[Record] = []
    steps: list[StepRecord] = []
    for s, e in idx.others:
        _sort_other(decode(s, e), skipped, steps, others)
    decoded: list[StepRecord] = []
    for s, e in idx.steps:
        got = decode(s, e)
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


def _first_max(values: list[tuple[int | None, Range | None]]) -> Range | None:
    """The range holding the largest figure (the first, on a tie), or None when there is none."""
    top, at = -1, None
    for v, r in values:
        if v is not None and r is not None and v > top:
            top, at = v, r
    return at


def _from_hook_index(buf: Buffer, chunks: list[Chunk], limit: int) -> _Rank | None:
    """:func:`_load_rank`'s result, reading the stretch the hook's index covers from the index and
    scanning the rest; None when the file is too short for sampling by the index's marks, or a line
    the index names does not hold the figure it says (the caller then scans the file)."""
    decode = _Decoder(buf)
    covered, covered_steps = chunks[-1].end, chunks[-1].first_step + chunks[-1].steps
    tail = _split(buf, decode, covered)
    tail_level, tail_reserved = _scan_columns(tail)
    tail_n = len(tail.step_starts)
    n = covered_steps + tail_n
    g = grid(n, limit)
    if g is None:
        return None
    ranges: dict[int, Range] = {}  # step index -> line range
    marks = [m for c in chunks for m in c.marks]
    for i in range(0, covered_steps, g):
        s = marks[i // MARK_EVERY]
        if not is_step_line(buf, s):
            return None
        ranges[i] = (s, _line_end(buf, s))
    for i in range(-(-covered_steps // g) * g, n, g):
        k = i - covered_steps
        ranges[i] = (tail.step_starts[k], tail.step_ends[k])
    # the maxima: over the stretches first, then the tail (the first one on a tie, as a scan finds)
    top_ranges: list[Range] = []
    for figure, at, col in (("level", "level_at", tail_level), ("reserved", "reserved_at", tail_reserved)):
        cands: list[tuple[int | None, Range | None]] = [(getattr(c, figure), getattr(c, at)) for c in chunks]
        t = _argmax(col)
        if t is not None:
            cands.append((col[t], (tail.step_starts[t], tail.step_ends[t])))
        r = _first_max(cands)
        if r is not None:
            top_ranges.append(r)
    last = (tail.step_starts[-1], tail.step_ends[-1]) if tail_n else chunks[-1].last_at
    by_start = {r[0]: r for r in ranges.values()}
    for r in (*top_ranges, *([last] if last is not None else [])):
        by_start.setdefault(r[0], r)
    skipped = SkipCounter()
    others: list[Record] = []
    steps: list[StepRecord] = []
    other_ranges: list[Range] = []
    for c in chunks:
        if c.others is None:
            other_ranges += _split(buf, decode, c.start, c.end).other
        else:
            other_ranges += c.others
    other_ranges += tail.other
    for s, e in other_ranges:
        _sort_other(decode(s, e), skipped, steps, others)
    decoded: list[StepRecord] = []
    picked = sorted(by_start.values())
    want_level = {c.level_at: c.level for c in chunks if c.level_at is not None}
    want_reserved = {c.reserved_at: c.reserved for c in chunks if c.reserved_at is not None}
    for s, e in picked:
        got = decode(s, e)
        if not isinstance(got, StepRecord):
            if (s, e) in top_ranges:
                return None  # the largest line does not decode: the scan knows what to take instead
            skipped[got.reason if isinstance(got, Skip) else "bad_value"] += 1
            continue
        # the index's figures must be the lines' own
        if want_level.get((s, e), got.level) != got.level or want_reserved.get((s, e), got.reserved) != got.reserved:
            return None
        decoded.append(got)
    prev = next((c.last_reserved for c in reversed(chunks) if c.last_reserved is not None), None)
    releases = sum(c.releases for c in chunks) + count_releases([prev, *tail_reserved])
    return _Rank(
        steps=[*decoded, *steps],
        others=others,
        skipped=skipped,
        sampled=True,
        releases=releases,
        step_lines=n + len(steps),
        step_ranges=picked,
        other_ranges=other_ranges,
    )


def _line_end(buf: Buffer, s: int) -> int:
    e = buf.find(b"\n", s)
    return len(buf) if e < 0 else e


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

    A rank file with the hook's step index (``rank<N>.jsonl.idx``, :mod:`memtop.analyzers.hook_index`)
    is read through it: only the stretch it does not cover is scanned. Otherwise (runs of run
    format v1, or a hook that could not write one) a rank file that ``analysis-index.json``
    describes as it is now (:mod:`memtop.analyzers.scan_index`) is read through that; otherwise it
    is scanned, and a long file's scan is saved there (``save_index``; ``use_index=False`` always
    scans; best effort: a read-only run directory is simply scanned each time). Every way gives the
    same result as a scan. Never raises for bad content; unreadable files become warnings.
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
                chunks = read_hook_index(path, buf, len(buf)) if use_index and len(buf) else []
                hooked = _from_hook_index(buf, chunks, limit) if chunks else None
                if hooked is not None:
                    got = hooked  # the hook's own index: nothing is saved into the run directory
                    changed = changed or bool(entries)
                elif idx is not None and _usable(idx, key, limit, buf):
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
    Does nothing (False) when every rank file is short or has the hook's step index (run format
    v2: analysis reads it instead). Never raises."""
    try:
        long = any(p.stat().st_size >= MIN_INDEXED_BYTES and not index_path(p).is_file() for p in rank_files(run_dir).values())
        if long:
            load_for_analysis(run_dir)
    except OSError:
        return False
    return long
