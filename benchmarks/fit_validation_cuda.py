"""On CUDA: the largest value `memtop fit` predicts under a memory cap, against the true largest
value found by bisection with real runs under `memtop train --device-memory CAP`.

    python benchmarks/fit_validation_cuda.py [--steps N] [--out docs/validation/fit-cuda.md] [CASE...]

`--device-memory` caps the caching allocator (torch.cuda.set_per_process_memory_fraction), so the
prediction compared here is the largest value whose predicted allocator peak plus the measured
fragmentation share stays under the cap (the CUDA context is outside the cap). Needs a GPU; not
run by the test suite. Not yet run on a GPU by its author: see docs/fit.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from memtop.fitting.capacity import largest_fitting  # noqa: E402
from memtop.fitting.report import peak_from_json  # noqa: E402
from memtop.fitting.sizes import parse_size  # noqa: E402

TOLERANCE = 0.10


@dataclass(frozen=True)
class Case:
    name: str
    script: str
    flag: str
    probes: tuple[int, ...]
    cap: str
    args: tuple[str, ...] = ()


CASES = [
    Case("transformer-batch", "transformer_finetune.py", "batch-size", (4, 8, 16), "4GB", ("--n-layers", "4", "--d-model", "512", "--n-heads", "8", "--seq-len", "256")),
    Case("transformer-seq-naive", "transformer_finetune.py", "seq-len", (64, 128, 256), "4GB", ("--attention", "naive", "--batch-size", "4")),
    Case("video-frames", "video_pipeline.py", "max-frames", (2, 4, 8), "4GB", ("--resolution", "128", "--channels", "32")),
    Case("image-resolution", "image_fit.py", "resolution", (64, 128, 256), "4GB", ("--hidden", "256", "--layers", "5")),
    Case("splat-points", "gaussian_splat.py", "num-gaussians", (20000, 40000, 80000), "4GB", ("--resolution", "256")),
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTOP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def _cmd(case: Case, value: int | None = None) -> list[str]:
    extra = [f"--{case.flag}", str(value)] if value is not None else []
    return [sys.executable, str(REPO / "sample_runs" / case.script), "--device", "cuda", "--log-every", "1000", *case.args, *extra]


def fits_under_cap(case: Case, value: int, cap: str, runs: Path, steps: int) -> bool:
    """One real run at ``value`` under the cap: True when it ends without running out of memory."""
    before = set(runs.iterdir()) if runs.exists() else set()
    subprocess.run([sys.executable, "-m", "memtop", "train", "--no-tui", "--max-steps", str(steps), "--device-memory", cap,
                    "--runs-dir", str(runs), "--name", f"bisect-{value}", "--", *_cmd(case, value)],
                   env=_env(), cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, timeout=1800)
    new = [p for p in runs.iterdir() if p not in before]
    meta = json.loads((new[0] / "meta.json").read_text()) if new else {}
    return meta.get("status") == "finished"


def run_case(case: Case, workdir: Path, steps: int) -> dict[str, object]:
    cap = parse_size(case.cap)
    proc = subprocess.run([sys.executable, "-m", "memtop", "fit", "--json", "--no-savings", "--steps", str(steps), "--runs-dir", str(workdir),
                           "--vary", f"{case.flag}=" + ",".join(map(str, case.probes)), "--", *_cmd(case)],
                          env=_env(), cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"case": case.name, "error": proc.stderr.strip().splitlines()[-1:]}
    data = json.loads(proc.stdout)
    frag = float(data["capacity"]["margin"]["fragmentation"])
    predicted = largest_fitting(lambda v: peak_from_json(data["fit"], v) * (1 + frag), cap, True, 1.0).value
    # bisection between the largest probe (fits) and the first doubling that does not
    lo, hi = max(case.probes), max(case.probes) * 2
    while fits_under_cap(case, hi, case.cap, workdir / "bisect", steps):
        lo, hi = hi, hi * 2
    while hi - lo > 1 and (hi - lo) / lo > 0.01:
        mid = (lo + hi) // 2
        if fits_under_cap(case, mid, case.cap, workdir / "bisect", steps):
            lo = mid
        else:
            hi = mid
    err = None if predicted is None else (predicted - lo) / lo
    return {"case": case.name, "cap": case.cap, "probes": case.probes, "predicted": predicted, "true": lo, "error": err,
            "ok": err is not None and abs(err) <= TOLERANCE and lo >= 4 * max(case.probes), "measure": data["measure"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "validation" / "fit-cuda.md")
    p.add_argument("cases", nargs="*")
    a = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("needs CUDA", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="memtop-fit-cuda-") as tmp:
        for case in [c for c in CASES if not a.cases or c.name in a.cases]:
            r = run_case(case, Path(tmp) / case.name, a.steps)
            print(r, flush=True)
            rows.append(r)
    lines = ["# `memtop fit` validation on CUDA: predicted vs bisected largest value under a cap", "",
             f"Written by `python benchmarks/fit_validation_cuda.py --steps {a.steps}` on {torch.cuda.get_device_name(0)} "
             f"({platform.node()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Pass: within {TOLERANCE:.0%} and the true value ≥ 4× the largest probe.", "",
             "| case | cap | probes | predicted largest | true largest (bisection) | error | result |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        e = r.get("error")
        lines.append(f"| {r['case']} | {r.get('cap', '-')} | {r.get('probes', '-')} | {r.get('predicted', '-')} | {r.get('true', '-')} | "
                     f"{f'{e:+.1%}' if isinstance(e, float) else e} | {'pass' if r.get('ok') else 'FAIL'} |")
    a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
