"""Run one probe: the user's command under `memtop train --no-tui --max-steps N`, and read its peak.

Each probe is a normal run directory (so `memtop analyze` and `compare` work on it). The probe is
launched through memtop's own CLI rather than by re-implementing `memtop train`, so it gets the
same supervision, meta.json, flags and exit handling as any run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtop.runs.reader import RankTail, StepRecord, load_run, rank_files
from memtop.runs.rundir import load_meta, sanitize_name

# The probe's hook measures activations every step: a probe is a few steps long, and sampling
# could miss the one step that holds the peak.
PROBE_ENV = {"MEMTOP_ACTIVATIONS": "every"}
# What a script's argparse exits with when it rejects a value.
USAGE_EXIT_CODE = 2


@dataclass(frozen=True)
class ProbeSpec:
    """One probe to run: the value it stands for, the command, the run's name and a label."""

    value: float
    argv: list[str]
    name: str
    label: str
    saving: str | None = None  # None for a base probe; else the saving it measures


@dataclass
class ProbeResult:
    spec: ProbeSpec
    run_dir: Path | None
    status: str  # finished, failed, oom, killed, interrupted, rejected, skipped
    exit_code: int | None
    steps: int
    peak_bytes: int | None  # the allocator's peak (CUDA) or the tracked bytes (CPU), max over steps
    measure: str | None  # "allocator_peak" or "tracked"
    categories: dict[str, int | None] = field(default_factory=dict)
    # Per moment of the step (forward_end, optimizer_step): the four tracked categories at the step
    # where that moment held the most, so a peak that moves from one moment to the other between
    # values is still fitted piece by piece.
    moments: dict[str, dict[str, int]] = field(default_factory=dict)
    device: str | None = None
    device_used: int | None = None  # NVML used bytes (CUDA) or resident set size (CPU) at that step
    reserved: int | None = None
    fragmentation_pct: float | None = None  # the largest over the probe's steps
    duration: float = 0.0
    message: str = ""

    @property
    def usable(self) -> bool:
        return self.status == "finished" and self.peak_bytes is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.spec.value,
            "label": self.spec.label,
            "saving": self.spec.saving,
            "run_id": self.run_dir.name if self.run_dir else None,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "status": self.status,
            "exit_code": self.exit_code,
            "steps": self.steps,
            "peak_bytes": self.peak_bytes,
            "measure": self.measure,
            "categories": self.categories,
            "moments": self.moments,
            "device": self.device,
            "device_used": self.device_used,
            "reserved": self.reserved,
            "fragmentation_pct": self.fragmentation_pct,
            "duration_s": round(self.duration, 3),
            "used": self.usable,
            "message": self.message,
        }


def _step_peak(rec: StepRecord) -> tuple[int | None, str | None]:
    """The step's peak and what it measures (the allocator's, else the tracked bytes)."""
    if rec.peak is not None:
        return rec.peak, "allocator_peak"
    if rec.tracked is not None:
        return rec.tracked, "tracked"
    if any(v is not None for v in rec.categories):
        return rec.categories.tracked(), "tracked"
    return None, None


TRACKED = ("parameters", "gradients", "optimizer_state", "activations")


def _take_moments(best: dict[str, dict[str, int]], rec: StepRecord) -> None:
    for name, m in rec.moments.items():
        comp = {c: v for c in TRACKED if (v := getattr(m, c)) is not None}
        if len(comp) < len(TRACKED):
            continue
        total = sum(comp.values())
        if name not in best or total > sum(best[name].values()):
            best[str(name)] = comp


def read_probe(result: ProbeResult) -> None:
    """Fill the peak, its categories and the device figures from the probe's run directory."""
    if result.run_dir is None:
        return
    data = load_run(result.run_dir)
    best: StepRecord | None = None
    best_peak = -1
    frag: float | None = None
    steps = 0
    for rank in data.records:
        for rec in data.steps(rank):
            steps = max(steps, rec.step)
            peak, _ = _step_peak(rec)
            if peak is not None and peak > best_peak:
                best, best_peak = rec, peak
            _take_moments(result.moments, rec)
            if rec.fragmentation_pct is not None:
                frag = max(frag or 0.0, rec.fragmentation_pct)
    result.steps = steps
    result.fragmentation_pct = frag
    if best is None:
        return
    result.peak_bytes, result.measure = _step_peak(best)
    result.categories = best.categories.as_dict()
    result.device = best.device
    result.device_used = best.device_used
    result.reserved = best.reserved


def _last_output_line(run_dir: Path | None) -> str:
    if run_dir is None:
        return ""
    try:
        with open(run_dir / "output.log", "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and not ln.startswith("[memtop]")]
    return lines[-1][:300] if lines else ""


def _find_run_dir(runs_dir: Path, name: str, before: set[str]) -> Path | None:
    pattern = re.compile(r"^\d{8}-\d{6}-" + re.escape(sanitize_name(name)) + r"(-\d+)?$")
    try:
        entries = sorted(p.name for p in runs_dir.iterdir())
    except OSError:
        return None
    for entry in reversed(entries):
        if entry not in before and pattern.match(entry):
            return runs_dir / entry
    return None


def _existing(runs_dir: Path) -> set[str]:
    try:
        return {p.name for p in runs_dir.iterdir()}
    except OSError:
        return set()


ProgressFn = Callable[[int, float], None]  # (steps recorded so far, seconds since the probe began)


def run_probe(spec: ProbeSpec, runs_dir: Path, steps: int, progress: ProgressFn | None = None, poll: float = 0.25) -> ProbeResult:
    """Run one probe to its end and read it back. Ctrl-C ends the probe's whole run, then re-raises."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    before = _existing(runs_dir)
    cmd = [sys.executable, "-m", "memtop", "train", "--no-tui", "--max-steps", str(steps), "--interval", "86400",
           "--runs-dir", str(runs_dir), "--name", spec.name, "--", *spec.argv]
    env = dict(os.environ)
    env.update(PROBE_ENV)
    env.pop("MEMTOP_RUN_DIR", None)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir: Path | None = None
    tail: RankTail | None = None
    seen = 0
    try:
        while proc.poll() is None:
            time.sleep(poll)
            if run_dir is None:
                run_dir = _find_run_dir(runs_dir, spec.name, before)
            if run_dir is not None and tail is None:
                files = rank_files(run_dir)
                if files:
                    tail = RankTail(next(iter(files.values())))
            if tail is not None:
                for rec in tail.poll():
                    if isinstance(rec, StepRecord):
                        seen = max(seen, rec.step)
            if progress is not None:
                progress(seen, time.monotonic() - started)
        _, err = proc.communicate()
    except BaseException:
        proc.terminate()  # memtop train ends the training process group on SIGTERM
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if run_dir is None:
        run_dir = _find_run_dir(runs_dir, spec.name, before)
    meta = load_meta(run_dir)[0] if run_dir else None
    status = meta.status if meta and meta.status else ("failed" if proc.returncode else "finished")
    result = ProbeResult(spec, run_dir, status, proc.returncode, 0, None, None, duration=time.monotonic() - started)
    read_probe(result)
    if result.steps == 0 and result.status != "oom":
        line = _last_output_line(run_dir)
        if proc.returncode == USAGE_EXIT_CODE and run_dir is not None:  # else memtop train itself refused
            result.status = "rejected"
        elif result.status == "finished":
            result.status = "failed"
            line = line or "it recorded no optimizer step"
        if not line and err.strip():
            line = err.decode("utf-8", "replace").strip().splitlines()[-1]
        result.message = line
    elif result.status == "oom":
        result.message = "ran out of memory"
    elif result.status != "finished":
        result.message = _last_output_line(run_dir)
    return result
