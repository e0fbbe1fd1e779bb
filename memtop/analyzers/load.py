"""Read a run for analysis fast, however long it is.

JSON-decoding every record of a 100,000-step run takes seconds; the report needs far less. Every
line is scanned cheaply for the few figures that must be exact (step, peak, tracked, reserved);
only a bounded, evenly spaced subset of step records is decoded in full, plus the lines that hold
the maxima. The resulting :class:`RankSeries` are thinned (``sampled`` says so) but their peak,
largest reserved, step count and cache-release count are exact. Non-step records (stages, OOM,
warnings, exit) are always decoded. Bad lines are skipped and counted, as in
:func:`memtop.runs.reader.load_run`; this is the only module of the analyzers that does I/O.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from pathlib import Path

from memtop.analyzers.series import RankSeries, build_series, count_releases
from memtop.runs.format import SCHEMA_VERSION
from memtop.runs.reader import Record, RunData, parse_line, rank_files
from memtop.runs.rundir import read_meta

MAX_DECODED_STEPS = 2000

_STEP_MARKERS = (b'{"type":"step"', b'{"type": "step"')
_KEYS = {
    "peak": re.compile(rb'"peak": ?(\d+|null)'),
    "reserved": re.compile(rb'"reserved": ?(\d+|null)'),
    "tracked": re.compile(rb'"tracked": ?(\d+|null)'),
}


@dataclass
class _Scan:
    index: list[int]  # line number of each step line
    level: list[int | None]  # peak where measured, else tracked
    reserved: list[int | None]


def _values(found: list[bytes]) -> list[int | None]:
    return [None if v == b"null" else int(v) for v in found]


def _column(lines: list[bytes], index: list[int], key: str, sample: bytes) -> list[int | None] | None:
    """``key``'s value on every step line, in one regex pass over the lines' prefixes.

    The prefix length comes from where the key sits in a sample line; the result is used only
    when every line yields exactly one value (else None, and the caller decodes lines itself).
    """
    pattern = _KEYS[key]
    m = pattern.search(sample)
    if m is None:
        return None
    width = m.end() + 96
    for prefix in (width, None):
        joined = b"\n".join([lines[k][:prefix] for k in index] if prefix else [lines[k] for k in index])
        found = pattern.findall(joined)
        if len(found) == len(index):
            return _values(found)
    return None


def _scan(lines: list[bytes]) -> tuple[_Scan, list[int]]:
    """Cheap pass: the step lines and their exact level/reserved; the line numbers of the rest."""
    index = [k for k, line in enumerate(lines) if line.startswith(_STEP_MARKERS)]
    if len(index) == len(lines):
        other: list[int] = []
    else:
        is_step = set(index)
        other = [k for k, line in enumerate(lines) if k not in is_step and line.strip()]
    sc = _Scan(index, [], [])
    if not index:
        return sc, other
    sample = lines[index[0]]
    peak = _column(lines, index, "peak", sample)
    if peak is None or all(v is None for v in peak[:1]):
        tracked = _column(lines, index, "tracked", sample)
        level = [p if p is not None else t for p, t in zip(peak, tracked, strict=True)] if peak and tracked else (tracked or peak)
    else:
        level = peak
    reserved = _column(lines, index, "reserved", sample)
    if level is None:
        # an unusual layout: decode every step line (correct, just slower)
        recs = [parse_line(lines[k]) for k in index]
        level = [_level_of(r) for r in recs]
        reserved = [_int_or_none(r.get("reserved")) if r else None for r in recs]
    sc.level = level
    sc.reserved = reserved if reserved is not None else [None] * len(index)
    return sc, other


def _int_or_none(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _level_of(rec: Record | None) -> int | None:
    if rec is None:
        return None
    p = _int_or_none(rec.get("peak"))
    return p if p is not None else _int_or_none(rec.get("tracked"))


def _chosen(sc: _Scan, limit: int) -> list[int]:
    """Positions (into the scan) to decode: evenly spaced, plus first/last and the maxima."""
    n = len(sc.index)
    if n <= limit:
        return list(range(n))
    stride = (n - 1) / (limit - 1)
    picks = {round(k * stride) for k in range(limit)}
    for col in (sc.level, sc.reserved):
        vals = [-1 if v is None else v for v in col]
        # the maximum, and a few runners-up in case the largest line does not decode
        picks.update(i for i in heapq.nlargest(4, range(n), key=vals.__getitem__) if vals[i] >= 0)
    picks.add(n - 1)
    return sorted(picks)


def _load_rank(lines: list[bytes], limit: int) -> tuple[list[Record], list[Record], int, bool, int | None, int]:
    """(decoded step records, other records, bad lines, sampled?, cache releases, step lines)."""
    sc, other_lines = _scan(lines)
    bad = 0
    others: list[Record] = []
    extra_steps: list[Record] = []
    for no in other_lines:
        rec = parse_line(lines[no])
        if rec is None:
            bad += 1
        elif rec.get("type") == "step":
            extra_steps.append(rec)  # a step record in an unusual layout
        else:
            others.append(rec)
    picks = _chosen(sc, limit)
    sampled = len(picks) < len(sc.index)
    steps: list[Record] = []
    for p in picks:
        rec = parse_line(lines[sc.index[p]])
        if rec is None:
            bad += 1
            continue
        steps.append(rec)
    steps.extend(extra_steps)
    releases = count_releases(sc.reserved) if sampled else None
    return steps, others, bad, sampled, releases, len(sc.index) + len(extra_steps)


def load_for_analysis(run_dir: Path, limit: int = MAX_DECODED_STEPS) -> tuple[RunData, dict[int, RankSeries]]:
    """The run (meta, non-step records, the decoded step records) and its per-rank series.

    Never raises for bad content; unreadable files become warnings.
    """
    meta = read_meta(run_dir)
    run = RunData(path=run_dir, meta=meta)
    if meta is None:
        run.warnings.append(f"{run_dir}: meta.json is missing or unreadable; figures come from the rank files alone")
    elif meta.get("schema") != SCHEMA_VERSION:
        run.warnings.append(f"{run_dir}: unknown schema version {meta.get('schema')!r} (this memtop reads {SCHEMA_VERSION}); reading leniently")
    series: dict[int, RankSeries] = {}
    for rank, path in rank_files(run_dir).items():
        try:
            lines = path.read_bytes().split(b"\n")
        except OSError as exc:
            run.warnings.append(f"{path.name}: cannot be read ({exc.strerror or exc})")
            continue
        steps, others, bad, sampled, releases, n_steps = _load_rank(lines, limit)
        run.records[rank] = [*others, *steps]
        run.bad_lines += bad
        s = build_series(rank, steps)
        if s is not None:
            s.sampled = sampled
            if releases is not None:
                s.cache_releases = releases
            s.total_steps = n_steps if sampled else len(s.steps)
            series[rank] = s
    if run.bad_lines:
        run.warnings.append(f"{run.bad_lines} unreadable line(s) skipped (truncated or garbage)")
    return run, series

