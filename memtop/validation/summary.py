"""``summary.md`` (one table row per step, then each step's own section) and ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memtop.validation.runner import Outcome


def write_summary(outdir: Path, outcomes: list[Outcome], header: dict[str, str], elapsed_s: float) -> None:
    lines = ["# memtop GPU validation", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("pass", "fail", "timeout", "error", "skip")}
    lines.append(f"- elapsed: {elapsed_s:.0f} s; " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    lines += ["", "| step | status | seconds | result | raw output |", "|---|---|---|---|---|"]
    for o in outcomes:
        headline = o.headline.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {o.step.name} | {o.status.upper()} | {o.seconds:.0f} | {headline} | [{o.step.name}/]({o.step.name}/) |")
    for o in outcomes:
        if o.details_md:
            lines += ["", f"## {o.step.name}: {o.step.what}", "", o.details_md]
    (outdir / "summary.md").write_text("\n".join(lines) + "\n")
    payload = {
        "header": header,
        "elapsed_s": elapsed_s,
        "steps": [{"name": o.step.name, "status": o.status, "seconds": round(o.seconds, 1), "headline": o.headline, "figures": o.figures}
                  for o in outcomes],
    }
    (outdir / "summary.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
