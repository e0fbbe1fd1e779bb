"""The fit as one JSON-ready dict (documented key by key in docs/fit.md); renderers read only this."""

from __future__ import annotations

from typing import Any

from memtop.analyzers.flags import FlagEntry
from memtop.fitting.capacity import CardRow, Fit, Margin, PeakModel
from memtop.fitting.curves import Curve
from memtop.fitting.probes import ProbeResult
from memtop.fitting.scaling import Saving

SCHEMA = 1


def curve_json(c: Curve) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "coef": [float(f"{x:.6g}") for x in c.coef],
        "residual_bytes": int(round(c.residual)),
        "max_residual_bytes": int(round(c.max_residual)),
        "points": c.points,
    }


def fit_json(f: Fit) -> dict[str, Any]:
    v = f.value
    if v is not None and float(v).is_integer():
        v = int(v)
    return {"value": v, "unbounded": f.unbounded}


def model_json(model: PeakModel, at: float) -> dict[str, Any]:
    cats = model.categories(at)
    return {
        "measure": model.measure,
        "peak_moment": model.peak_moment(at),
        "categories": {c: curve_json(cur) for c, cur in cats.items()},
        "moments": {m: {c: curve_json(cur) for c, cur in cs.items()} for m, cs in model.moments.items()},
        "other": curve_json(model.other) if model.other is not None else None,
        "total": {"residual_bytes": int(round(model.total_residual)), "max_residual_bytes": int(round(model.total_max_residual))},
    }


def number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def build(
    *,
    command: list[str],
    flag: FlagEntry,
    role: str | None,
    chosen: str,
    steps: int,
    probes: list[ProbeResult],
    model: PeakModel,
    at: list[float],
    capacity_bytes: int | None,
    capacity_source: str,
    device: dict[str, Any] | None,
    margin: Margin,
    largest: Fit | None,
    cards_margin: Margin,
    cards: list[CardRow],
    savings: list[Saving],
    saving_probes: dict[str, ProbeResult],
    notes: list[str],
) -> dict[str, Any]:
    base = [p for p in probes if p.spec.saving is None]
    measured = {p.spec.value: p.peak_bytes for p in base if p.usable}
    values = sorted({*measured, *at})
    largest_probe = max(measured)
    predictions = []
    for v in values:
        predictions.append(
            {
                "value": number(v),
                "peak_bytes": int(round(model.peak(v))),
                "measured_peak_bytes": measured.get(v),
                "probed": v in measured,
                "extrapolated": v > largest_probe or v < min(measured),
                "categories": {c: int(round(max(0.0, cur(v)))) for c, cur in model.categories(v).items()},
            }
        )
    return {
        "schema": SCHEMA,
        "command": command,
        "flag": flag.flag,
        "flag_role": role,
        "flag_chosen": chosen,
        "steps": steps,
        "measure": model.measure,
        "device": device,
        "probes": [p.to_json() for p in probes],
        "fit": model_json(model, largest_probe),
        "predictions": predictions,
        "capacity": {
            "memory_bytes": capacity_bytes,
            "source": capacity_source,
            "margin": {"fragmentation": round(margin.fragmentation, 4), "fixed_bytes": margin.fixed_bytes, "measured": margin.measured, "text": margin.text},
            "largest_value": fit_json(largest) if largest is not None else None,
        },
        "cards": {
            "margin": {"fragmentation": round(cards_margin.fragmentation, 4), "fixed_bytes": cards_margin.fixed_bytes,
                       "measured": cards_margin.measured, "text": cards_margin.text},
            "rows": [
                {"gb": r.gb, "bytes": r.bytes, "as_is": fit_json(r.as_is), "savings": {k: fit_json(f) for k, f in r.savings.items()}}
                for r in cards
            ],
        },
        "savings": [
            {
                "key": s.key,
                "title": s.title,
                "change": s.change,
                "how": s.how,
                "assumption": s.assumption,
                "probe_run_id": saving_probes[s.key].run_dir.name if s.key in saving_probes and saving_probes[s.key].run_dir else None,  # type: ignore[union-attr]
                "probe_value": number(saving_probes[s.key].spec.value) if s.key in saving_probes else None,
            }
            for s in savings
        ],
        "notes": notes,
    }


def _poly(c: dict[str, Any], v: float) -> float:
    return max(0.0, sum(float(k) * v**i for i, k in enumerate(c.get("coef") or [])))


def peak_from_json(fit: dict[str, Any], v: float) -> float:
    """The predicted peak at ``v`` from the ``"fit"`` object alone (what renderers draw)."""
    moments = fit.get("moments") or {}
    best = max((sum(_poly(c, v) for c in cats.values()) for cats in moments.values()), default=0.0)
    other = fit.get("other")
    return best + (_poly(other, v) if isinstance(other, dict) else 0.0)
