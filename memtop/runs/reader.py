"""Read run records leniently: whole runs for analysis, and incremental tails for live views.

A run may be still being written (last line incomplete), may have crashed (truncated line), or
may contain garbage; none of that raises. Unreadable lines are counted, not fatal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtop.runs.format import RANK_FILE_PREFIX, RANK_FILE_SUFFIX, SCHEMA_VERSION
from memtop.runs.rundir import read_meta

Record = dict[str, Any]


def parse_line(line: str | bytes) -> Record | None:
    """One JSONL line -> record dict, or None when it is not a valid record."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        return None
    return obj


def rank_files(run_dir: Path) -> dict[int, Path]:
    """``{rank: path}`` for every ``rank<N>.jsonl`` in the run directory."""
    found: dict[int, Path] = {}
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return found
    for p in entries:
        name = p.name
        if name.startswith(RANK_FILE_PREFIX) and name.endswith(RANK_FILE_SUFFIX):
            middle = name[len(RANK_FILE_PREFIX) : -len(RANK_FILE_SUFFIX)]
            if middle.isdigit():
                found[int(middle)] = p
    return dict(sorted(found.items()))


class RankTail:
    """Incrementally reads new complete lines of one rank file (remembers its byte offset).

    A trailing line without a newline is held back until it is completed, so a record being
    written is never half-read; :meth:`poll` with ``final=True`` also takes such a last line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""
        self.bad_lines = 0

    def poll(self, max_bytes: int = 64 * 1024 * 1024, final: bool = False) -> list[Record]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(max_bytes)
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        out: list[Record] = []
        for raw in lines:
            if not raw.strip():
                continue
            rec = parse_line(raw)
            if rec is None:
                self.bad_lines += 1
            else:
                out.append(rec)
        return out


@dataclass
class RunData:
    """Everything read from one run directory."""

    path: Path
    meta: dict[str, Any] | None
    records: dict[int, list[Record]] = field(default_factory=dict)
    bad_lines: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        if self.meta and isinstance(self.meta.get("run_id"), str):
            return str(self.meta["run_id"])
        return self.path.name

    def steps(self, rank: int | None = None) -> list[Record]:
        ranks = [rank] if rank is not None else list(self.records)
        out: list[Record] = []
        for r in ranks:
            out.extend(rec for rec in self.records.get(r, []) if rec.get("type") == "step")
        return out

    def of_type(self, kind: str) -> Iterator[Record]:
        for recs in self.records.values():
            for rec in recs:
                if rec.get("type") == kind:
                    yield rec


def load_run(run_dir: Path) -> RunData:
    """Read meta and every rank file; never raises for bad content (see ``warnings``)."""
    meta = read_meta(run_dir)
    data = RunData(path=run_dir, meta=meta)
    if meta is None:
        data.warnings.append(f"{run_dir}: meta.json is missing or unreadable; figures come from the rank files alone")
    else:
        schema = meta.get("schema")
        if schema != SCHEMA_VERSION:
            data.warnings.append(f"{run_dir}: unknown schema version {schema!r} (this memtop reads {SCHEMA_VERSION}); reading leniently")
    for rank, path in rank_files(run_dir).items():
        tail = RankTail(path)
        data.records[rank] = tail.poll(max_bytes=-1, final=True)  # -1: the whole file
        data.bad_lines += tail.bad_lines
    if data.bad_lines:
        data.warnings.append(f"{data.bad_lines} unreadable line(s) skipped (truncated or garbage)")
    return data
