"""The measured figures the advisor reasons from, gathered once per run.

The composition comes from the run's peak step (the rank with the most memory), or from the
``oom`` record when the run died before its first step completed. Both moments of the peak step
(the end of the forward pass and the end of the optimizer step) are kept, so that an estimate can
recompute the step's peak as the larger of the two after a change (:mod:`memtop.analyzers.whatif`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memtop.analyzers import fragmentation, leak
from memtop.analyzers.flags import FlagEntry, apply_command_values, split_command
from memtop.analyzers.modelkind import ModelKind, model_kind
from memtop.analyzers.roles import roles
from memtop.analyzers.series import TRACKED_CATEGORIES as TRACKED
from memtop.analyzers.series import RankSeries, rank_series
from memtop.analyzers.summary import Peak, RunInfo, find_peak, large_tensors, run_info
from memtop.runs.format import CATEGORIES
from memtop.runs.reader import OomRecord, RunData, StepRecord
from memtop.runs.records import LargeTensor


@dataclass
class Facts:
    info: RunInfo
    series: dict[int, RankSeries]
    peak: Peak | None
    oom: OomRecord | None
    level: int  # the peak in bytes (allocator peak on CUDA, tracked on CPU)
    has_allocator: bool
    cats: dict[str, int]  # the composition at the peak; unmeasured figures as 0
    other_known: bool
    device_total: int | None
    device_used_max: int | None
    large: tuple[LargeTensor, ...]
    flags: list[FlagEntry]
    roles: dict[str, FlagEntry]
    head: list[str]  # launcher + script
    args: list[str]  # the script's own arguments
    frag: fragmentation.FragmentationReport
    leak: leak.LeakReport
    moments: dict[str, dict[str, int]] = field(default_factory=dict)  # point -> the five categories
    model: ModelKind = field(default_factory=ModelKind)
    notes: list[str] = field(default_factory=list)

    @property
    def activations(self) -> int:
        """The saved activations at the end of the forward pass, also when the peak was at the
        optimizer step (where they are freed)."""
        return max([self.cats["activations"], *(m["activations"] for m in self.moments.values())])

    @property
    def peak_point(self) -> str:
        return self.peak.peak_point if self.peak is not None and self.peak.peak_point else "forward_end"

    def moment(self, point: str) -> dict[str, int] | None:
        return self.moments.get(point)

    @property
    def parameters(self) -> int:
        return self.cats["parameters"]

    @property
    def gradients(self) -> int:
        return self.cats["gradients"]

    @property
    def optimizer_state(self) -> int:
        return self.cats["optimizer_state"]

    @property
    def other(self) -> int:
        return self.cats["other"]

    def share(self, nbytes: int) -> float:
        return nbytes / self.level if self.level > 0 else 0.0

    @property
    def command(self) -> list[str]:
        return [*self.head, *self.args]


def run_flags(run: RunData) -> list[FlagEntry]:
    """``meta["detected_flags"]``, stored by ``memtop train`` at launch; a run without them has none.

    Nothing is detected here: reading a run directory never looks at, or runs, the user's script.
    """
    return list(run.meta.detected_flags or ()) if run.meta is not None else []


def gather(run: RunData, detect_flags_now: bool = False, series: dict[int, RankSeries] | None = None) -> Facts:
    """The run's facts. ``detect_flags_now`` is ignored (kept for callers): flags come from meta.json only."""
    del detect_flags_now
    series = series if series is not None else rank_series(run)
    info = run_info(run, series)
    peak = find_peak(series)
    ooms = list(run.of_class(OomRecord))
    oom = ooms[-1] if ooms else None
    notes: list[str] = []
    if peak is not None:
        cats = {c: (v or 0) for c, v in peak.categories.items()}
        other_known = peak.categories["other"] is not None
        level = peak.bytes
        has_alloc = peak.measure == "allocator_peak"
        large = peak.large_tensors
        total = peak.device_total or info.device_total
    elif oom is not None:
        cats = {c: (v or 0) for c, v in oom.categories.as_dict().items()}
        other_known = oom.categories.other is not None
        allocated = oom.allocated
        level = allocated if allocated is not None else sum(cats.values())
        has_alloc = allocated is not None
        large = large_tensors(oom)
        total = info.device_total
        notes.append("no step completed: the composition is the one at the out-of-memory error")
    else:
        cats = {c: 0 for c in CATEGORIES}
        other_known = False
        level = 0
        has_alloc = False
        large = ()
        total = info.device_total
    if peak is not None:
        ps = series[peak.rank]
        moments = peak_moments([ps.records[peak.index], ps.records[-1]], cats, level, peak.peak_point or "forward_end", has_alloc)
    else:
        moments = {"oom" if oom is not None else "forward_end": {**cats, "other": cats["other"] if other_known else 0}}
    used = [v for s in series.values() for v in s.device_used if v is not None]
    head, args = split_command(info.command) if info.command else ([], [])
    flags = apply_command_values(run_flags(run), args, follow_command_style=False)  # the syntax stored at launch stands
    return Facts(
        info=info,
        series=series,
        peak=peak,
        oom=oom,
        level=level,
        has_allocator=has_alloc,
        cats=cats,
        other_known=other_known,
        device_total=total,
        device_used_max=max(used) if used else None,
        large=large,
        flags=flags,
        roles=roles(flags),
        head=head,
        args=args,
        frag=fragmentation.analyze(series),
        leak=leak.analyze(series),
        moments=moments,
        model=model_kind(series),
        notes=notes,
    )


def peak_moments(recs: list[StepRecord], cats: dict[str, int], level: int, point: str, has_alloc: bool) -> dict[str, dict[str, int]]:
    """The five categories at each moment of the peak step; they add up to that moment's level.

    The peak moment is the peak record's composition (``other`` = the step's peak minus the tracked
    bytes). Another moment is the larger of the peak step's and the last step's (the first step can
    be the peak while its forward pass ran before the optimizer state existed); its ``other`` is its
    allocated bytes minus its tracked ones (0 on CPU, where the level is the tracked bytes).
    """
    out: dict[str, dict[str, int]] = {}
    for rec in recs:
        for name, m in rec.moments.items():
            vals = {c: getattr(m, c) or 0 for c in TRACKED}
            alloc = m.allocated
            vals["other"] = max(0, alloc - sum(vals.values())) if has_alloc and alloc is not None else 0
            if name in out and level_of(out[name]) >= level_of(vals):
                continue
            out[name] = vals
    best = {c: cats[c] for c in TRACKED}
    best["other"] = max(0, level - sum(best.values()))
    out[point] = best
    return out


def level_of(moment: dict[str, int]) -> int:
    return sum(moment.values())

