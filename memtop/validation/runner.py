"""Run the plan: one process per step, its own timeout, a total budget, the summary after each step.

A step that fails, hangs or crashes is recorded and the next one runs. The summary is rewritten
after every step, so a machine taken away halfway still leaves what was done.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from memtop.validation.plan import Step
from memtop.validation.summary import write_summary
from memtop.validation.taskkit import REPO, stop_group


@dataclass
class Outcome:
    step: Step
    status: str  # pass, fail, skip, timeout, error
    seconds: float
    headline: str
    details_md: str = ""
    figures: dict[str, Any] | None = None


def run_plan(steps: list[Step], outdir: Path, budget_s: float, header: dict[str, str], progress: TextIO) -> list[Outcome]:
    start = time.monotonic()
    outcomes: list[Outcome] = []
    for step in steps:
        left = budget_s - (time.monotonic() - start)
        if left < step.min_s:
            outcomes.append(Outcome(step, "skip", 0.0, f"not started: {left:.0f} s of the {budget_s:.0f} s budget left"))
        else:
            progress.write(f"[gpu-validation] {step.name}: {step.what} (timeout {min(step.timeout_s, left):.0f} s)\n")
            progress.flush()
            outcomes.append(run_step(step, outdir, min(step.timeout_s, left)))
        last = outcomes[-1]
        progress.write(f"[gpu-validation] {step.name}: {last.status.upper()} in {last.seconds:.0f} s: {last.headline}\n")
        progress.flush()
        write_summary(outdir, outcomes, header, time.monotonic() - start)
    return outcomes


def run_step(step: Step, outdir: Path, timeout: float) -> Outcome:
    step_dir = outdir / step.name
    step_dir.mkdir(parents=True, exist_ok=True)
    log = step_dir / "log.txt"
    env = dict(os.environ)
    env.pop("MEMTOP_RUN_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(dict(step.env))
    t0 = time.monotonic()
    with open(log, "wb") as out:
        out.write(("$ " + shlex.join(step.argv) + "\n").encode())
        out.flush()
        try:
            child = subprocess.Popen(list(step.argv), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        except OSError as exc:
            return Outcome(step, "error", 0.0, f"could not start: {exc}")
        try:
            rc: int | None = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(child)
            rc = None
    seconds = time.monotonic() - t0
    result = _read_result(step_dir)
    if rc is None:
        headline = f"killed at its {timeout:.0f} s timeout" + (f" ({result['headline']})" if result else "")
        return Outcome(step, "timeout", seconds, headline, _details(result), _figures(result))
    if result is not None:
        status = str(result.get("status", "error"))
        if rc != 0 and status == "pass":
            status = "fail"
        headline = str(result.get("headline", "")) + (f" (exit code {rc})" if rc != 0 else "")
        return Outcome(step, status, seconds, headline, _details(result), _figures(result))
    tail = _last_line(log)
    return Outcome(step, "pass" if rc == 0 else "fail", seconds, f"exit code {rc}" + (f": {tail}" if tail else ""))


def _read_result(step_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((step_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _details(result: dict[str, Any] | None) -> str:
    return str(result.get("details_md", "")) if result else ""


def _figures(result: dict[str, Any] | None) -> dict[str, Any] | None:
    figures = result.get("figures") if result else None
    return figures if isinstance(figures, dict) else None


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if len(lines) > 1 else ""
