"""Checks over a run directory's records: the CUDA identities, step continuity, the figures.

Each line goes through memtop's one decode step (:func:`memtop.runs.reader.read_file`); the
identities are then checked on each typed record, and every line the decoder
skipped is a violation with its reason, so that the reader cannot hide a bad record.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from memtop.runs.reader import rank_files, read_file
from memtop.runs.records import ExitRecord, OomRecord, Record, RunMeta, StageRecord, StepRecord, WarningRecord
from memtop.runs.rundir import load_meta

CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "other")
MAX_VIOLATIONS_LISTED = 20


R = TypeVar("R", StepRecord, StageRecord, OomRecord, WarningRecord, ExitRecord)


@dataclass
class Records:
    """Every record of a record file (decoded and validated), and the lines the decoder skipped."""

    items: list[Record] = field(default_factory=list)
    bad_lines: int = 0
    skipped: str = ""  # the decoder's reasons, "2 unreadable line(s) skipped: 2 not JSON ..."

    def of_class(self, cls: type[R]) -> list[R]:
        return [r for r in self.items if isinstance(r, cls)]


def read_records(path: Path) -> Records:
    recs, skipped, error = read_file(path)
    out = Records(items=list(recs), bad_lines=sum(skipped.values()), skipped=skipped.describe() if skipped else "")
    if error:
        out.skipped = error
    return out


def step_violations(rec: StepRecord) -> list[str]:
    """What is wrong with one CUDA step record (empty when every identity holds)."""
    where = f"step {rec.step}"
    problems: list[str] = []
    if not (rec.device or "").startswith("cuda"):
        problems.append(f"{where}: device is {rec.device!r}, not cuda")
    allocated, reserved, peak, frag = rec.allocated, rec.reserved, rec.peak, rec.fragmentation_bytes
    for key, value in (("allocated", allocated), ("reserved", reserved), ("peak", peak), ("fragmentation_bytes", frag)):
        if value is None:
            problems.append(f"{where}: {key} is None, not an int")
    values: list[int] = []
    for name, v in rec.categories.as_dict().items():
        if v is None:
            problems.append(f"{where}: categories.{name} is None, not an int")
        else:
            values.append(v)  # the decoder refuses negative byte counts
    if peak is not None and len(values) == len(CATEGORIES) and sum(values) != peak:
        problems.append(f"{where}: sum of categories {sum(values)} != peak {peak} (diff {sum(values) - peak})")
    if allocated is not None and reserved is not None and frag is not None:
        if allocated + frag != reserved:
            problems.append(f"{where}: allocated {allocated} + fragmentation_bytes {frag} != reserved {reserved}")
        pct = rec.fragmentation_pct
        if reserved > 0 and pct is not None and abs(pct - frag / reserved * 100) > 0.01:
            problems.append(f"{where}: fragmentation_pct {pct} != {frag / reserved * 100:.4f}")
    if peak is not None and allocated is not None and peak < allocated:
        problems.append(f"{where}: peak {peak} < allocated {allocated}")
    return problems


def nvml_below_reserved(rec: StepRecord) -> bool:
    """NVML's figure under the allocator's reserved bytes. Not an identity: memtop samples NVML at
    most once a second, so a record can carry a figure from before the allocator grew. Counted and
    reported, not failed."""
    return rec.device_used is not None and rec.reserved is not None and rec.device_used < rec.reserved


@dataclass
class RunCheck:
    """The verdict on one run directory."""

    run_dir: Path | None
    steps: int = 0
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.run_dir is not None and not self.violations

    def summary(self) -> str:
        if self.run_dir is None:
            return "no run directory"
        if not self.violations:
            return f"{self.steps} step records, identities hold on every one"
        return f"{self.steps} step records, {len(self.violations)} problems: " + "; ".join(self.violations[:3])


def check_run(run_dir: Path | None, expect_steps: int | None = None) -> RunCheck:
    """Identities on every step record of every rank file, steps 1..n without gaps, figures for the table."""
    out = RunCheck(run_dir)
    if run_dir is None:
        return out
    files = rank_files(run_dir)  # rank<N>.jsonl, then proc<pid>.jsonl
    if not files:
        out.violations.append("no rank*.jsonl file")
        return out
    steps: list[StepRecord] = []
    for path in files.values():
        records = read_records(path)
        if records.bad_lines:
            out.violations.append(f"{path.name}: {records.bad_lines} lines are not JSON objects or not valid records ({records.skipped})")
        elif records.skipped:  # not readable at all (not a regular file, no permission)
            out.violations.append(records.skipped)
        rank_steps = records.of_class(StepRecord)
        numbers = [r.step for r in rank_steps]
        if numbers != list(range(1, len(numbers) + 1)):
            out.violations.append(f"{path.name}: step numbers are not 1..{len(numbers)}: {numbers[:12]}")
        for rec in rank_steps:
            out.violations.extend(step_violations(rec))
        for warning in records.of_class(WarningRecord):
            out.violations.append(f"{path.name}: warning record: {warning.message!r}")
        steps += rank_steps
    out.steps = len(steps)
    if expect_steps is not None and out.steps != expect_steps:
        out.violations.append(f"{out.steps} step records, expected {expect_steps}")
    if len(out.violations) > MAX_VIOLATIONS_LISTED:
        more = len(out.violations) - MAX_VIOLATIONS_LISTED
        out.violations = out.violations[:MAX_VIOLATIONS_LISTED] + [f"... and {more} more"]
    out.figures = step_figures(steps)
    return out


def step_figures(steps: list[StepRecord]) -> dict[str, Any]:
    """Peak, reserved, fragmentation, step time and NVML-minus-reserved over the step records."""
    figures: dict[str, Any] = {}
    for key, vals in (("peak", [r.peak for r in steps]), ("reserved", [r.reserved for r in steps]), ("allocated", [r.allocated for r in steps])):
        known = [v for v in vals if v is not None]
        figures[f"max_{key}"] = max(known) if known else None
    pcts = [r.fragmentation_pct for r in steps if r.fragmentation_pct is not None]
    figures["max_fragmentation_pct"] = max(pcts) if pcts else None
    figures["median_fragmentation_pct"] = statistics.median(pcts) if pcts else None
    times = [r.step_time for r in steps if r.step_time is not None]
    figures["median_step_ms"] = statistics.median(times) * 1e3 if times else None
    gaps = [u - v for r in steps if (u := r.device_used) is not None and (v := r.reserved) is not None]
    figures["nvml_minus_reserved_median"] = int(statistics.median(gaps)) if gaps else None
    figures["nvml_records"] = len(gaps)
    figures["nvml_below_reserved_records"] = sum(1 for r in steps if nvml_below_reserved(r))
    return figures


def find_run_dir(runs_dir: Path, name: str) -> Path | None:
    """The run directory memtop made for ``--name name`` (the newest if several)."""
    if not runs_dir.is_dir():
        return None
    found = [p for p in runs_dir.iterdir() if p.is_dir() and (p.name.endswith(f"-{name}") or f"-{name}-" in p.name)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def read_meta(run_dir: Path | None) -> RunMeta:
    """The run's meta.json (decoded like every reader's); an empty one when there is none."""
    meta = load_meta(run_dir)[0] if run_dir is not None else None
    return meta if meta is not None else RunMeta()
