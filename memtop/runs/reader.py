"""Read run records leniently: whole runs for analysis, and incremental tails for live views.

A run may be still being written (last line incomplete), may have crashed (truncated line), or
may contain garbage; none of that raises. Each line goes through :func:`memtop.runs.decode.decode_line`
once: it becomes a typed record or a skip counted by reason. Files are opened through
:mod:`memtop.runs.safeio` (regular files only, never blocking), and a line is at most 1 MiB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from memtop.runs.checks import MAX_LINE
from memtop.runs.decode import FULL_HEAD, Skip, SkipCounter, StepRebuilder, decode_line
from memtop.runs.format import SCHEMA_VERSION
from memtop.runs.recordfiles import file_label, record_files
from memtop.runs.records import ExitRecord, OomRecord, Record, RunMeta, StageRecord, StepRecord, WarningRecord
from memtop.runs.rundir import load_meta
from memtop.runs.safeio import Unreadable, open_regular

__all__ = [
    "ExitRecord",
    "OomRecord",
    "RankTail",
    "Record",
    "RunData",
    "StageRecord",
    "StepRecord",
    "WarningRecord",
    "file_label",
    "load_run",
    "parse_line",
    "rank_files",
    "read_file",
]

R = TypeVar("R", StepRecord, StageRecord, OomRecord, WarningRecord, ExitRecord)


def parse_line(line: str | bytes) -> Record | None:
    """One JSONL line -> a typed record, or None when it is not a valid record (a step delta
    is not one alone: read files with :class:`RankTail` or :class:`StepRebuilder`)."""
    got = decode_line(line)
    return None if isinstance(got, Skip) else got


def rank_files(run_dir: Path) -> dict[int, Path]:
    """``{key: path}`` for every record file: ``rank<N>.jsonl`` under ``N``, then each
    ``proc<pid>.jsonl`` under a key of its own (:mod:`memtop.runs.recordfiles`; show a key with
    ``file_label``). Empty if the directory cannot be listed."""
    return record_files(run_dir)


class RankTail:
    """Incrementally reads new complete lines of one rank file: the one run follower.

    Remembers its byte offset; a trailing line without a newline is held back until it is
    completed, so a record being written is never half-read (:meth:`poll` with ``final=True``
    also takes such a last line). A file that shrank (truncated) or was replaced (rotated: another
    inode) is read again from its start. A line over 1 MiB is skipped and counted, and never held
    in memory whole. A path that is not a regular file is reported once in ``error``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""
        self._overlong = False  # inside a line over MAX_LINE: drop bytes up to its newline
        self._ino: int | None = None
        self._rebuild = StepRebuilder()  # step deltas over the file's last full record
        self.skipped = SkipCounter()
        self.restarts = 0
        self.error: str | None = None

    @property
    def bad_lines(self) -> int:
        return sum(self.skipped.values())

    def poll(self, max_bytes: int = 64 * 1024 * 1024, final: bool = False) -> list[Record]:
        try:
            with open_regular(self.path) as fh:
                st = os.fstat(fh.fileno())
                if self._ino is not None and (st.st_ino != self._ino or st.st_size < self.offset):
                    self._restart()
                self._ino = st.st_ino
                fh.seek(self.offset)
                chunk = fh.read(max_bytes)
        except Unreadable as exc:
            self.error = f"{self.path.name}: {exc.why}: skipped"
            return []
        except OSError as exc:
            self.error = f"{self.path.name}: {exc.strerror or exc}: skipped"
            return []
        self.error = None
        self.offset += len(chunk)
        return self._lines(chunk, final)

    def _restart(self) -> None:
        self.offset = 0
        self._partial = b""
        self._overlong = False
        self._rebuild.reset()
        self.restarts += 1

    def _lines(self, chunk: bytes, final: bool) -> list[Record]:
        if self._overlong:
            nl = chunk.find(b"\n")
            if nl < 0:
                return []
            chunk = chunk[nl + 1 :]
            self._overlong = False
        data = self._partial + chunk if self._partial else chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        overlong_base = False
        if len(self._partial) > MAX_LINE:
            self.skipped["too_long"] += 1
            overlong_base = FULL_HEAD.match(self._partial) is not None  # a full step record lost: no base after it
            self._partial = b""
            self._overlong = True
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        out: list[Record] = []
        decode = self._rebuild.decode
        for raw in lines:
            got = decode(raw)
            if isinstance(got, Skip):
                if got.reason != "blank":
                    self.skipped[got.reason] += 1
            else:
                out.append(got)
        if overlong_base:
            self._rebuild.reset()
        return out


@dataclass
class RunData:
    """Everything read from one run directory, as typed records."""

    path: Path
    meta: RunMeta | None
    records: dict[int, list[Record]] = field(default_factory=dict)  # by file key: rank, then processes
    bad_lines: int = 0
    warnings: list[str] = field(default_factory=list)
    skipped: SkipCounter = field(default_factory=SkipCounter)

    @property
    def run_id(self) -> str:
        if self.meta is not None and self.meta.run_id:
            return self.meta.run_id
        return self.path.name

    def steps(self, rank: int | None = None) -> list[StepRecord]:
        ranks = [rank] if rank is not None else list(self.records)
        out: list[StepRecord] = []
        for r in ranks:
            out.extend(rec for rec in self.records.get(r, []) if isinstance(rec, StepRecord))
        return out

    def of_type(self, kind: str) -> Iterator[Record]:
        for recs in self.records.values():
            for rec in recs:
                if rec.type == kind:
                    yield rec

    def of_class(self, cls: type[R]) -> Iterator[R]:
        """The records of one class, typed (``run.of_class(OomRecord)``)."""
        for recs in self.records.values():
            for rec in recs:
                if isinstance(rec, cls):
                    yield rec

    def count_skips(self, skipped: SkipCounter) -> None:
        self.skipped.update(skipped)
        self.bad_lines = sum(self.skipped.values())

    def finish_warnings(self) -> None:
        """Append the one warning about skipped lines (by reason), if any were skipped."""
        if self.skipped:
            self.warnings.append(self.skipped.describe())


def meta_warnings(run_dir: Path, meta: RunMeta | None, why: str | None) -> list[str]:
    """What to tell the user about meta.json: missing/unreadable, newer schema, dropped fields."""
    if meta is None:
        detail = f" ({why})" if why else ""
        return [f"{run_dir}: meta.json is missing or unreadable{detail}; figures come from the rank files alone"]
    out: list[str] = []
    if meta.schema is not None and meta.schema > SCHEMA_VERSION:
        out.append(f"{run_dir}: unknown schema version {meta.schema!r} (this memtop reads {SCHEMA_VERSION}); reading leniently")
    if meta.dropped:
        out.append(f"{run_dir}: meta.json: ignored unusable value(s) of {', '.join(meta.dropped[:8])}")
    return out


_CHUNK = 16 * 1024 * 1024


def read_file(path: Path) -> tuple[list[Record], SkipCounter, str | None]:
    """Every record of one record file, the lines skipped by reason, and the one-line note when
    the file could not be read (not a regular file, no permission). Never raises."""
    tail = RankTail(path)
    recs: list[Record] = []
    while True:  # in chunks: the file's bytes are never all in memory at once
        before = tail.offset
        recs += tail.poll(max_bytes=_CHUNK)
        if tail.error or tail.offset == before:
            break
    recs += tail.poll(max_bytes=_CHUNK, final=True)
    return recs, tail.skipped, tail.error


def load_run(run_dir: Path) -> RunData:
    """Read meta and every rank file, decoding every line; never raises for bad content."""
    meta, why = load_meta(run_dir)
    data = RunData(path=run_dir, meta=meta)
    data.warnings.extend(meta_warnings(run_dir, meta, why))
    for key, path in rank_files(run_dir).items():
        recs, skipped, error = read_file(path)
        if error:
            data.warnings.append(error)
            continue
        data.records[key] = recs
        data.count_skips(skipped)
    data.finish_warnings()
    return data
