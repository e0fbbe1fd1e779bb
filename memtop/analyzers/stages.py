"""User-marked pipeline stages (``with memtop.stage("name")``): time and memory per stage name."""

from __future__ import annotations

from dataclasses import dataclass

from memtop.runs.reader import RunData, StageRecord


@dataclass(frozen=True)
class StageRow:
    name: str
    count: int
    duration_total: float
    duration_mean: float
    before_max: int | None
    after_max: int | None
    peak_max: int | None  # the highest peak within any run of the stage (None when not measured)
    delta_mean: float | None  # mean of after - before: what a stage leaves behind
    measure: str  # "cuda_allocated", "rss" or "unknown"


def analyze(run: RunData) -> list[StageRow]:
    """One row per stage name, in order of first appearance."""
    acc: dict[str, dict[str, list[float]]] = {}
    measure: dict[str, str] = {}
    for rec in run.of_class(StageRecord):
        name = rec.name
        a = acc.setdefault(name, {"duration": [], "before": [], "after": [], "peak": [], "delta": []})
        a["duration"].append(rec.duration or 0.0)
        before, after, peak = rec.before, rec.after, rec.peak
        if before is not None:
            a["before"].append(before)
        if after is not None:
            a["after"].append(after)
        if peak is not None:
            a["peak"].append(peak)
        if before is not None and after is not None:
            a["delta"].append(after - before)
        measure.setdefault(name, rec.measure or "unknown")
    rows = []
    for name, a in acc.items():
        n = len(a["duration"])
        rows.append(
            StageRow(
                name=name,
                count=n,
                duration_total=sum(a["duration"]),
                duration_mean=sum(a["duration"]) / n if n else 0.0,
                before_max=int(max(a["before"])) if a["before"] else None,
                after_max=int(max(a["after"])) if a["after"] else None,
                peak_max=int(max(a["peak"])) if a["peak"] else None,
                delta_mean=sum(a["delta"]) / len(a["delta"]) if a["delta"] else None,
                measure=measure.get(name, "unknown"),
            )
        )
    return rows
