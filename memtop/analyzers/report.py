"""The post-mortem report: every analyzer's result for one run, and its stable JSON form.

``build(run)`` runs the analyzers; renderers (memtop.render) turn the result into text or JSON.
The JSON keys are documented in docs/analyze.md; ``REPORT_VERSION`` changes only when a key is
removed or changes meaning (new keys may be added).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from memtop.analyzers import oom as oom_mod
from memtop.analyzers import ranks as ranks_mod
from memtop.analyzers import stages as stages_mod
from memtop.analyzers.advice import suggestions_for
from memtop.analyzers.facts import gather
from memtop.analyzers.fragmentation import FragmentationReport
from memtop.analyzers.leak import LeakReport
from memtop.analyzers.series import RankSeries
from memtop.analyzers.suggestion import Suggestion
from memtop.analyzers.summary import CPU_UNMEASURED, Peak, RunInfo, Timeline, timeline
from memtop.runs.reader import ExitRecord, RunData, WarningRecord

REPORT_VERSION = 1


@dataclass
class Report:
    run: RunInfo
    peak: Peak | None
    timelines: list[Timeline]
    fragmentation: FragmentationReport
    leak: LeakReport
    oom: oom_mod.OomReport | None
    stages: list[stages_mod.StageRow]
    ranks: ranks_mod.RankReport | None
    suggestions: list[Suggestion]
    sampled: bool
    warnings: list[str] = field(default_factory=list)
    exception: str | None = None  # the exception the exit record names (a crashed run)
    unmeasured: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing at all could be read: no step, no OOM, no stage."""
        return self.peak is None and self.oom is None and not self.stages


def build(run: RunData, series: dict[int, RankSeries] | None = None, detect_flags: bool = True) -> Report:
    facts = gather(run, detect_flags_now=detect_flags, series=series)
    suggestions = suggestions_for(facts)
    warnings = list(run.warnings)
    # the hook's own warnings (it turned itself off; steps counted per backward pass) change how
    # every figure below reads: a post-mortem must say them, not only the live status line
    for w in run.of_class(WarningRecord):
        warnings.append(f"hook (rank {w.rank if w.rank is not None else 0}): {w.message}")
    unmeasured: list[str] = []
    if facts.peak is not None and facts.peak.measure == "tracked":
        unmeasured.append(CPU_UNMEASURED)
    sampled = any(s.sampled for s in facts.series.values())
    if sampled:
        warnings.append(
            "long run: the peak, step count, largest reserved and cache releases are exact; "
            "fits, medians and the timeline use an evenly spaced sample of the steps"
        )
    if not facts.series and facts.oom is None:
        warnings.append(_no_steps_warning(facts.info.status))
    if facts.info.status == "running":
        warnings.append("the run is still going: this report covers the records written so far")
    warnings.extend(facts.notes)
    oom = oom_mod.explain(facts, suggestions)
    if oom is not None and oom.request_too_large:
        # no saving of the run's memory fits a request larger than the device: advice would mislead
        suggestions = [s for s in suggestions if s.rule == "leak"]
    return Report(
        run=facts.info,
        peak=facts.peak,
        timelines=[timeline(s) for s in facts.series.values()],
        fragmentation=facts.frag,
        leak=facts.leak,
        oom=oom,
        stages=stages_mod.analyze(run),
        ranks=ranks_mod.analyze(facts.series),
        suggestions=suggestions,
        sampled=sampled,
        exception=exit_exception(run),
        warnings=warnings,
        unmeasured=unmeasured,
    )


def _no_steps_warning(status: str) -> str:
    """Why a run has no step record: still starting, or a loop that never called optimizer.step()."""
    if status == "running":
        return "no step records yet (the run is still starting)"
    if status == "finished":
        # an evaluation script, or a loop memtop could not tie to a model: nothing marked a step
        return (
            "no step records: the script finished without an optimizer step or a backward pass memtop could "
            "tie to a model (steps, and --max-steps, count those); to mark steps yourself, wrap the loop in "
            "`with memtop.profile(model) as prof:` and call `prof.step()` once per iteration"
        )
    return "no step records"


def exit_exception(run: RunData) -> str | None:
    """The exception type an ``exit`` record names (the last one that names any)."""
    found: str | None = None
    for rec in run.of_class(ExitRecord):
        if rec.exception:
            found = rec.exception
    return found


# --- JSON ------------------------------------------------------------------------------------------


def _run_json(r: RunInfo, sampled: bool) -> dict[str, Any]:
    return {
        "id": r.run_id,
        "path": r.path,
        "command": r.command,
        "cwd": r.cwd,
        "status": r.status,
        "exit_code": r.exit_code,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "duration_s": r.duration,
        "device": {"name": r.device_name, "kind": r.device_kind, "total_bytes": r.device_total},
        "ranks": r.ranks,
        "steps": r.steps,
        "first_step": r.first_step,
        "last_step": r.last_step,
        "sampled": sampled,
    }


def _peak_json(p: Peak | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "rank": p.rank,
        "step": p.step,
        "bytes": p.bytes,
        "measure": p.measure,
        "percent_of_device": p.percent_of_device,
        "device_total_bytes": p.device_total,
        "peak_point": p.peak_point,
        "allocated": p.allocated,
        "reserved": p.reserved,
        "tracked": p.tracked,
        "breakdown": [{"category": b.category, "bytes": b.bytes, "percent": b.percent, "highwater": b.highwater} for b in p.breakdown],
        "large_tensors": [t.as_dict() for t in p.large_tensors],
    }


def _timeline_json(t: Timeline) -> dict[str, Any]:
    return {
        "rank": t.rank,
        "steps": t.steps,
        "first_step": t.first_step,
        "last_step": t.last_step,
        "step_time": {"median": t.step_time_median, "mean": t.step_time_mean, "p90": t.step_time_p90},
        "series": {s.name: {"first": s.first, "last": s.last, "min": s.min, "max": s.max, "median": s.median} for s in t.stats},
        "points": t.points,
    }


def _leak_json(lk: LeakReport) -> dict[str, Any]:
    d = asdict(lk)
    d["tensors"] = [{**asdict(t), "growth_bytes": t.growth_bytes} for t in lk.tensors]
    return d


def _oom_json(o: oom_mod.OomReport | None) -> dict[str, Any] | None:
    if o is None:
        return None
    d = asdict(o)
    d["large_tensors"] = [t.as_dict() for t in o.large_tensors]
    d["fits_with"] = o.fits_with.to_json() if o.fits_with else None
    d["smallest_batch"] = o.smallest_batch.to_json() if o.smallest_batch else None
    return d


def to_json(rep: Report) -> dict[str, Any]:
    """The report as plain JSON data (keys documented in docs/analyze.md)."""
    return {
        "report_version": REPORT_VERSION,
        "run": {**_run_json(rep.run, rep.sampled), "exception": rep.exception},
        "warnings": rep.warnings,
        "unmeasured": rep.unmeasured,
        "peak": _peak_json(rep.peak),
        "timeline": [_timeline_json(t) for t in rep.timelines],
        "fragmentation": asdict(rep.fragmentation),
        "leak": _leak_json(rep.leak),
        "oom": _oom_json(rep.oom),
        "stages": [asdict(s) for s in rep.stages],
        "ranks": asdict(rep.ranks) if rep.ranks else None,
        "suggestions": [s.to_json() for s in rep.suggestions],
    }
