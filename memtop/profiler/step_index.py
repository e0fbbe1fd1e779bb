"""The step index the hook keeps next to its record file, so analysis never scans a long run.

``rank<N>.jsonl`` gets ``rank<N>.jsonl.idx`` once it holds :data:`CHUNK_STEPS` step lines (shorter
files are scanned as fast as an index is read; the name is not a record file's, for memtop's
readers and for ``rank*.jsonl`` patterns). Every :data:`CHUNK_STEPS` step lines the writer appends one JSON line
describing that stretch of the record file: its byte range, its line counts, the byte ranges of
its other (non-step) lines, the exact figures analysis needs (the largest level and reserved, with
the line each is on, the number of reserved drops) and the offset of every :data:`MARK_EVERY`-th
step line, which analysis samples. At close the last, partial stretch is described too; a crashed
run's last stretch is not, and analysis scans it (docs/run-format.md, "The step index").

It costs the training thread a few comparisons per record: the figures are taken from the record
dict the writer already holds, the offsets from the bytes it writes. Anything unusual (a failed
or interrupted write, a figure that is not an integer, an index that cannot be written) ends the
index for good: analysis then scans what the index does not cover. Never raises.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from memtop.runs.format import STEP_INDEX_SUFFIX

INDEX_VERSION: Final = 1
CHUNK_STEPS = 4096  # not Final: tests shorten it
MARK_EVERY: Final = 16  # analysis samples step lines whose index (from the file's start) is a multiple of this
MAX_OTHERS: Final = 256  # more non-step lines in one chunk: "others" is null (analysis finds them itself)
MAX_INT: Final = 2**63 - 1
STEP_HEAD: Final = b'{"type":"step"'
RELEASE_DROP: Final = 0.8  # as memtop.analyzers.series.count_releases counts a cache release


def index_path(record_file: Path) -> Path:
    """``rank3.jsonl`` -> ``rank3.jsonl.idx`` (no ``*.jsonl`` pattern takes it for a record file)."""
    return record_file.with_name(record_file.name + STEP_INDEX_SUFFIX)


def _fig(v: Any) -> int | None:
    if v is None:
        return None
    if type(v) is not int or v < 0 or v > MAX_INT:
        raise ValueError("not a byte count")
    return v


class StepIndexWriter:
    """Follows one record file's writes (:meth:`add`) and appends the index line of each chunk."""

    def __init__(self, record_file: Path) -> None:
        self.path = index_path(record_file)
        self.dead = False
        self._fd: int | None = None
        self._offset = 0  # bytes of the record file so far
        self._steps_total = 0
        self._prev_reserved: int | None = None
        self._last_rec: dict[str, Any] | None = None  # the last step record added, and its figures
        self._last_figs: tuple[int | None, int | None] = (None, None)
        self._new_chunk()

    def _new_chunk(self) -> None:
        self._start = self._offset
        self._lines = 0
        self._steps = 0
        self._others: list[list[int]] | None = []
        self._level = -1
        self._level_at: list[int] | None = None
        self._reserved = -1
        self._reserved_at: list[int] | None = None
        self._releases = 0
        self._last_at: list[int] | None = None
        self._marks: list[int] = []

    def add(self, rec: dict[str, Any], nbytes: int, is_step: bool) -> None:
        """One whole line of ``nbytes`` (newline included) was written at the end of the file."""
        if self.dead:
            return
        s = self._offset
        e = s + nbytes - 1  # the line without its newline
        self._offset = s + nbytes
        self._lines += 1
        if not is_step:
            others = self._others
            if others is not None:
                if len(others) < MAX_OTHERS:
                    others.append([s - self._start, e - self._start])
                else:
                    self._others = None
            return
        if rec is self._last_rec:  # a repeated record (the writer's put_repeat): the same figures
            level, reserved = self._last_figs
        else:
            try:
                peak, reserved = _fig(rec.get("peak")), _fig(rec.get("reserved"))
                level = peak if peak is not None else _fig(rec.get("tracked"))
            except ValueError:
                self.abandon()
                return
            self._last_rec, self._last_figs = rec, (level, reserved)
        if self._steps_total % MARK_EVERY == 0:
            self._marks.append(s - self._start)
        self._steps_total += 1
        self._steps += 1
        self._last_at = [s, e]
        if level is not None and level > self._level:
            self._level, self._level_at = level, [s, e]
        if reserved is not None:
            if reserved > self._reserved:
                self._reserved, self._reserved_at = reserved, [s, e]
            prev = self._prev_reserved
            if prev is not None and prev > 0 and reserved < RELEASE_DROP * prev:
                self._releases += 1
            self._prev_reserved = reserved
        if self._steps >= CHUNK_STEPS:
            self._flush()

    def _flush(self) -> None:
        if self._lines == 0:
            return
        doc = {
            "v": INDEX_VERSION,
            "start": self._start,
            "end": self._offset,
            "lines": self._lines,
            "steps": self._steps,
            "others": self._others,
            "level": self._level if self._level >= 0 else None,
            "level_at": self._level_at,
            "reserved": self._reserved if self._reserved >= 0 else None,
            "reserved_at": self._reserved_at,
            "releases": self._releases,
            "last_reserved": self._prev_reserved,
            "last_at": self._last_at,
            "marks": self._marks,
        }
        data = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)
            if os.write(self._fd, data) != len(data):
                raise OSError("short write")
        except OSError:
            self.abandon()
            return
        self._new_chunk()

    def moved(self, record_file: Path) -> None:
        """The record file got another name: the index follows it (or ends)."""
        if self.dead:
            return
        target = index_path(record_file)
        if self._fd is not None:
            try:
                os.replace(self.path, target)
            except OSError:
                self.abandon()
                return
        self.path = target

    def abandon(self) -> None:
        """No index from here on; the lines already written describe the file's start correctly."""
        self.dead = True
        self._close_fd()

    def close(self) -> None:
        """Describe the last, partial chunk (of a file long enough to have an index) and close."""
        if not self.dead and self._fd is not None:
            self._flush()
        self._close_fd()
        self.dead = True

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
