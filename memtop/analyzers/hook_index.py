"""Read and check the step index the hook writes next to a record file (``rank<N>.jsonl.idx``).

The hook (:mod:`memtop.profiler.step_index`) describes every 4,096 step lines of its record file in
one JSON line: byte range, line counts, the other lines' ranges, the largest level and reserved
and the line each is on, the reserved drops, and the offset of every 16th step line. Analysis
reads the stretch it covers from the index and scans only the rest (a crashed run's last stretch).

The index is a shortcut, never a source of figures the file does not hold: every range must lie
inside the file, start a line and end at a newline, the stretches must follow each other from the
file's first byte, and every line the index names must be a step line. An index that does not
check out is ignored whole (a torn last line, written when the hook died, is simply dropped).
The marks (the offsets of sampled step lines) are checked as they are used, and the analysis also
decodes the lines holding the maxima: it drops the index if a mark is not a step line's start or
a maximum's figure is not its line's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memtop.runs.format import STEP_INDEX_SUFFIX
from memtop.runs.safeio import Unreadable, read_bounded

INDEX_VERSION = 1
MARK_EVERY = 16  # as memtop.profiler.step_index writes it
MAX_INDEX_BYTES = 64 * 1024 * 1024
_STEP_HEADS = frozenset(m[:14] for m in (b'{"type":"step"', b'{"type": "step"'))  # a step line's first 14 bytes

Range = tuple[int, int]


@dataclass(frozen=True)
class Chunk:
    """One index line: a stretch of the record file, in absolute byte offsets."""

    start: int
    end: int
    steps: int
    first_step: int  # the index (from the file's start) of its first step line
    others: tuple[Range, ...] | None
    level: int | None
    level_at: Range | None
    reserved: int | None
    reserved_at: Range | None
    releases: int
    last_reserved: int | None
    last_at: Range | None
    marks: list[int]  # absolute offsets of the step lines whose index is a multiple of MARK_EVERY (checked when used)


def index_path(record_file: Path) -> Path:
    """``rank3.jsonl`` -> ``rank3.jsonl.idx`` (no ``*.jsonl`` pattern takes it for a record file)."""
    return record_file.with_name(record_file.name + STEP_INDEX_SUFFIX)


def _nat(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise ValueError("not a non-negative integer")
    return v


def _opt(v: Any) -> int | None:
    return None if v is None else _nat(v)


class _Check:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size = buf, size

    def is_step_line(self, s: int) -> bool:
        return self.line_start(s) and bytes(self.buf[s : s + 14]) in _STEP_HEADS

    def line_start(self, s: int) -> bool:
        return 0 <= s < self.size and (s == 0 or self.buf[s - 1] == 10)

    def step_line(self, r: Any, lo: int, hi: int) -> Range:
        if not isinstance(r, list) or len(r) != 2:
            raise ValueError("range")
        s, e = _nat(r[0]), _nat(r[1])
        if not (lo <= s <= e < hi) or not self.line_start(s) or self.buf[e] != 10 or bytes(self.buf[s : s + 14]) not in _STEP_HEADS:
            raise ValueError("not a step line")
        return s, e


class _Beyond(Exception):
    """A stretch past the end of the bytes read: the run went on writing since (not an error)."""


def _chunk(doc: Any, start: int, first_step: int, check: _Check) -> Chunk:
    if not isinstance(doc, dict) or doc.get("v") != INDEX_VERSION:
        raise ValueError("version")
    if _nat(doc.get("start")) != start:
        raise ValueError("not contiguous")
    end, steps, lines = _nat(doc.get("end")), _nat(doc.get("steps")), _nat(doc.get("lines"))
    if end > check.size:
        raise _Beyond()
    if not start < end or check.buf[end - 1] != 10 or lines < steps:
        raise ValueError("range")
    others: tuple[Range, ...] | None = None
    raw_others = doc.get("others")
    if raw_others is not None:
        if not isinstance(raw_others, list) or len(raw_others) > lines:
            raise ValueError("others")
        got = []
        for r in raw_others:
            if not isinstance(r, list) or len(r) != 2:
                raise ValueError("range")
            s, e = start + _nat(r[0]), start + _nat(r[1])
            if not (s <= e < end) or not check.line_start(s) or check.buf[e] != 10:
                raise ValueError("other line")
            got.append((s, e))
        others = tuple(got)
    marks_raw = doc.get("marks")
    first_mark = -(-first_step // MARK_EVERY) * MARK_EVERY
    expected = max(0, -(-(first_step + steps - first_mark) // MARK_EVERY))
    if not isinstance(marks_raw, list) or len(marks_raw) != expected:
        raise ValueError("marks")
    if marks_raw and (set(map(type, marks_raw)) != {int} or min(marks_raw) < 0 or max(marks_raw) >= end - start):
        raise ValueError("marks")
    marks = [start + m for m in marks_raw]  # each one used is checked then (is_step_line): a few hundred of them
    level, reserved = _opt(doc.get("level")), _opt(doc.get("reserved"))
    level_at = check.step_line(doc.get("level_at"), start, end) if level is not None else None
    reserved_at = check.step_line(doc.get("reserved_at"), start, end) if reserved is not None else None
    last_at = check.step_line(doc.get("last_at"), start, end) if steps else None
    return Chunk(
        start=start,
        end=end,
        steps=steps,
        first_step=first_step,
        others=others,
        level=level,
        level_at=level_at,
        reserved=reserved,
        reserved_at=reserved_at,
        releases=_nat(doc.get("releases")),
        last_reserved=_opt(doc.get("last_reserved")),
        last_at=last_at,
        marks=marks,
    )


def is_step_line(buf: Any, s: int) -> bool:
    """Whether a step line starts at ``s`` (what a mark must point at)."""
    return (s == 0 or buf[s - 1] == 10) and bytes(buf[s : s + 14]) in _STEP_HEADS


def read_hook_index(record_file: Path, buf: Any, size: int) -> list[Chunk]:
    """The index's stretches, checked against ``buf`` (the record file's ``size`` bytes); empty
    when there is no index or it does not check out. Never raises."""
    try:
        raw = read_bounded(index_path(record_file), MAX_INDEX_BYTES)
    except (Unreadable, OSError):
        return []
    lines = raw.split(b"\n")
    lines.pop()  # the part after the last newline: empty, or a line the hook did not finish
    check = _Check(buf, size)
    chunks: list[Chunk] = []
    start = first_step = 0
    try:
        for line in lines:
            c = _chunk(json.loads(line), start, first_step, check)
            chunks.append(c)
            start, first_step = c.end, first_step + c.steps
    except _Beyond:
        pass  # a run still being written: the stretches read so far, the rest is scanned
    except (ValueError, TypeError, RecursionError, IndexError):
        return []
    return chunks
