"""``memtop fit``'s prediction against the true boundary. Under a memory cap C (a smaller card),
``memtop fit --vary batch-size=1,2,4 --device-memory C --json`` predicts the largest batch size that
fits; the truth is found by bisection over real runs of the same command under the same cap
(``set_per_process_memory_fraction``), bare: a batch size fits when 3 optimizer steps finish without
an OOM. Skipped with one line where ``memtop fit`` does not exist yet."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from memtop.units import fmt_bytes
from memtop.validation.taskkit import (
    SKIP,
    Result,
    cuda_total_bytes,
    md_table,
    memtop_argv,
    run_logged,
    sample,
    task_args,
)

FLAGS = ["--n-layers", "12", "--d-model", "768", "--n-heads", "12", "--vocab-size", "32000", "--seq-len", "1024", "--amp", "--dtype", "bf16"]
CAP = 16 << 30
DEADLINE_S = 125.0  # stop bisecting here: the step's timeout is 150 s
MAX_BATCH = 128
PREDICTION_KEYS = ("max_fit", "largest_fit", "max_value", "largest_value", "fits_up_to", "max_batch", "largest", "prediction", "predicted")


def find_prediction(report: Any) -> int | None:
    """The predicted largest value in fit's JSON: ``capacity.largest_value.value`` (docs/fit.md as
    first written), else the first integer under one of PREDICTION_KEYS, searched breadth-first."""
    try:
        value = report["capacity"]["largest_value"]["value"]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    except (KeyError, TypeError):
        pass
    queue = [report]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            for key in PREDICTION_KEYS:
                v = node.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return int(v)
            queue.extend(node.values())
        elif isinstance(node, list):
            queue.extend(node)
    return None


def bisect(fits: Callable[[int], bool], start: int) -> tuple[int, int | None]:
    """(largest that fits, smallest that does not; None above MAX_BATCH): doubling from ``start``
    (or halving when it does not fit), then bisection."""
    lo, hi = 0, None
    b = start
    while b <= MAX_BATCH:
        if not fits(b):
            hi = b
            break
        lo, b = b, b * 2
    if hi is None:
        return lo, None
    if lo == 0:
        b = hi // 2
        while b >= 1 and not fits(b):
            hi, b = b, b // 2
        lo = max(b, 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    t0 = time.monotonic()
    probe = subprocess.run(memtop_argv("fit", "--help"), capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        res.status = SKIP
        res.headline = "skipped: `python3 -m memtop fit --help` fails here (memtop fit does not exist yet)"
        res.write(args.step_dir)
        return
    cap = min(CAP, (cuda_total_bytes() // 2) >> 30 << 30)
    script = sample("transformer_finetune")
    extra = ["--no-savings"] if "--no-savings" in probe.stdout else []  # the advisor's savings are not checked here
    fit = run_logged(memtop_argv("fit", "--vary", "batch-size=1,2,4", "--device-memory", f"{cap >> 30}GiB", *extra, "--json", "--",
                                 sys.executable, script, *FLAGS, "--device", "cuda", "--steps", "20"), args.step_dir / "fit.log", 80)
    body = fit.text().split("\n", 1)[-1]
    report: Any = None
    try:
        report = json.loads(body[body.index("{"):]) if "{" in body else None
    except ValueError:
        report = None
    predicted = find_prediction(report) if report is not None else None
    if fit.rc != 0 or predicted is None:
        res.fail(f"memtop fit exited {fit.rc}; prediction {'not found in its JSON' if predicted is None else predicted} (fit.log)")

    tried: dict[int, str] = {}

    def fits(batch: int) -> bool:
        if batch not in tried and time.monotonic() - t0 > DEADLINE_S:
            raise TimeoutError
        if batch not in tried:
            p = run_logged([sys.executable, "-m", "memtop.validation.capped", str(cap), script, *FLAGS, "--batch-size", str(batch),
                            "--device", "cuda", "--steps", "3", "--log-every", "1"], args.step_dir / f"bisect-{batch}.log", 60)
            text = p.text()
            tried[batch] = "fits" if p.rc == 0 else ("OOM" if "OutOfMemoryError" in text or "out of memory" in text else f"error {p.rc}")
        return tried[batch] == "fits"

    lo, hi = 0, None  # lo fits (0: nothing known), hi does not
    complete = True
    try:
        lo, hi = bisect(fits, max(1, predicted or 4))
    except TimeoutError:
        complete = False
        fitting = [k for k, v in tried.items() if v == "fits"]
        failing = [k for k, v in tried.items() if v != "fits"]
        lo, hi = max(fitting, default=0), min(failing, default=None)
        res.fail(f"bisection stopped at its {DEADLINE_S:.0f} s deadline: the boundary is between {lo} and {hi}")
    errors = [f"batch {k}: {v}" for k, v in tried.items() if v.startswith("error")]
    if errors:
        res.fail("bisection runs failed for another reason than OOM: " + ", ".join(errors))
    truth = lo if hi is not None and complete else None
    res.note(f"Cap {fmt_bytes(cap)}; workload `transformer_finetune.py {' '.join(FLAGS)}`.")
    res.note(md_table(["batch size", "under the cap"], [[str(k), v] for k, v in sorted(tried.items())]))
    boundary = str(truth) if truth is not None else (f"above {MAX_BATCH}" if complete else f"between {lo} and {hi} (incomplete)")
    res.note(f"\nmemtop fit predicted {predicted}; the largest batch size that fits is {boundary}.")
    if predicted is not None and truth is not None and predicted > truth:
        res.fail(f"fit predicts {predicted}, but {predicted} does not fit (largest that fits: {truth})")
    res.headline = f"predicted {predicted}, true boundary {boundary} under {fmt_bytes(cap)} ({len(tried)} bisection runs)"
    res.figures = {"cap": cap, "predicted": predicted, "truth": truth, "tried": tried}
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
