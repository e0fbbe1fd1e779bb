"""The scan of a long rank file, kept so that the next analysis skips it.

Reading a run for analysis (:mod:`memtop.analyzers.load`) scans every line of each rank file for
the exact peak, step count and cache releases, then decodes a few hundred lines. The scan is
linear in the file: ≈4 s of CPU for a 1,000,000-step run. What it finds is small (the byte ranges
of the lines to decode, the step count, the release count), so it is written next to the rank files
as ``analysis-index.json`` and reused while the rank file is unchanged: same size, same
modification time in nanoseconds, same inode. A file still being written, or rewritten, no longer
matches and is scanned again. The index is only a shortcut: every line it points at is decoded as
in a full scan, every range is checked against the file (inside it, on line boundaries), and an
index that does not check out is ignored.

Only files of at least :data:`MIN_INDEXED_BYTES` are indexed (a shorter scan costs less than
reading an index), so ordinary runs, test fixtures and recorded samples never get one.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memtop.runs.safeio import Unreadable, read_bounded

INDEX_FILE = "analysis-index.json"
INDEX_VERSION = 2  # 2: long files sampled on the grid of the hook's step index (older indexes are scanned again)
MIN_INDEXED_BYTES = 64 * 1024 * 1024
MAX_INDEX_BYTES = 4 * 1024 * 1024
MAX_PER_FILE = 4  # entries per rank file, one per sample size (`memtop runs` samples fewer lines than `analyze`)
MAX_RANGES = 20_000  # more non-step lines than this: no index (reading it would cost a scan)

Range = tuple[int, int]


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of a rank file."""

    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, fd: int) -> FileKey:
        st = os.fstat(fd)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class RankIndex:
    """One rank file's scan: the step-line ranges decoded (in order), the other non-blank lines,
    the number of step lines, the cache releases (None when every step was decoded)."""

    key: FileKey
    limit: int
    step_lines: int
    releases: int | None
    sampled: bool
    steps: tuple[Range, ...]
    others: tuple[Range, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.key.size,
            "mtime_ns": self.key.mtime_ns,
            "ino": self.key.ino,
            "limit": self.limit,
            "step_lines": self.step_lines,
            "releases": self.releases,
            "sampled": self.sampled,
            "steps": [list(r) for r in self.steps],
            "others": [list(r) for r in self.others],
        }


def _nat(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise ValueError("not a non-negative integer")
    return v


def _ranges(v: Any, size: int) -> tuple[Range, ...]:
    if not isinstance(v, list) or len(v) > MAX_RANGES:
        raise ValueError("ranges")
    out: list[Range] = []
    for r in v:
        if not isinstance(r, list) or len(r) != 2:
            raise ValueError("range")
        s, e = _nat(r[0]), _nat(r[1])
        if s > e or e > size:
            raise ValueError("range outside the file")
        out.append((s, e))
    return tuple(out)


def _entry(v: Any) -> RankIndex:
    if not isinstance(v, dict):
        raise ValueError("entry")
    key = FileKey(_nat(v.get("size")), _nat(v.get("mtime_ns")), _nat(v.get("ino")))
    releases = v.get("releases")
    sampled = v.get("sampled")
    if not isinstance(sampled, bool):
        raise ValueError("sampled")
    return RankIndex(
        key=key,
        limit=_nat(v.get("limit")),
        step_lines=_nat(v.get("step_lines")),
        releases=None if releases is None else _nat(releases),
        sampled=sampled,
        steps=_ranges(v.get("steps"), key.size),
        others=_ranges(v.get("others"), key.size),
    )


def read_index(run_dir: Path) -> dict[str, list[RankIndex]]:
    """``{rank file name: its entries}``; empty when there is none or it is unusable (never raises)."""
    try:
        raw = read_bounded(run_dir / INDEX_FILE, MAX_INDEX_BYTES)
        doc = json.loads(raw)
    except (Unreadable, OSError, ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION or not isinstance(doc.get("files"), dict):
        return {}
    out: dict[str, list[RankIndex]] = {}
    for name, entries in doc["files"].items():
        if not isinstance(entries, list):
            continue
        for v in entries[:MAX_PER_FILE]:
            try:
                out.setdefault(str(name), []).append(_entry(v))
            except (ValueError, TypeError):
                continue
    return out


def on_line_boundaries(buf: Any, ranges: tuple[Range, ...], size: int) -> bool:
    """Each range starts a line and ends at a newline or the end of the file, and no two ranges
    overlap (so an index can never make a reader decode a line twice: no more work than a scan)."""
    nl = ord("\n")
    last_end = -1
    for s, e in sorted(ranges):
        if s <= last_end or (s > 0 and buf[s - 1] != nl) or (e < size and buf[e] != nl):
            return False
        last_end = e
    return True


def write_index(run_dir: Path, entries: dict[str, list[RankIndex]]) -> bool:
    """Write the index atomically; False (and nothing written) where the directory is read-only."""
    if not entries:
        return False
    doc = {"version": INDEX_VERSION, "files": {name: [e.to_json() for e in es[:MAX_PER_FILE]] for name, es in entries.items()}}
    tmp = run_dir / f".{INDEX_FILE}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, separators=(",", ":"))
        os.replace(tmp, run_dir / INDEX_FILE)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True
