"""Check `memtop fit` against real runs: fit from small values, predict at 4x the largest probe or
more, run that value for real, compare the peaks.

On a CPU the peak is the tracked peak (parameters + gradients + optimizer state + activations);
see README "How the numbers are measured". Each case runs `memtop fit --json --no-savings` on the
sample script and then the same script under `memtop train --max-steps` at the far value.

    python benchmarks/fit_validation.py [--steps N] [--out docs/validation/fit.md] [CASE...]

tests/test_fit_validation.py runs one case of the same table (the image fit, fewer steps).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from memtop.fitting.probes import ProbeSpec, run_probe  # noqa: E402

TOLERANCE = 0.10


@dataclass(frozen=True)
class Case:
    name: str
    script: str
    flag: str
    probes: tuple[int, ...]
    far: int
    args: tuple[str, ...] = ()
    steps: int | None = None  # more than --steps where the data vary from step to step


CASES = [
    Case("transformer-batch", "transformer_finetune.py", "batch-size", (1, 2, 4), 16),
    Case("transformer-seq", "transformer_finetune.py", "seq-len", (16, 32, 64), 256),
    # naive attention keeps the (seq x seq) score matrices for backward: quadratic in --seq-len
    Case("transformer-seq-naive", "transformer_finetune.py", "seq-len", (16, 32, 64), 256, ("--attention", "naive")),
    Case("video-frames", "video_pipeline.py", "max-frames", (2, 4, 8), 32),
    Case("image-resolution", "image_fit.py", "resolution", (8, 16, 32), 128),
    # Each step renders one of --views cameras and gathers the visible gaussians only when some are
    # culled: the probes must see every camera (steps = views), or a view seen only at the far
    # value adds a gathered copy the probes never saw.
    Case("splat-points", "gaussian_splat.py", "num-gaussians", (2000, 4000, 8000), 32000, steps=8),
]


@dataclass
class Result:
    case: Case
    predicted: int | None = None
    measured: int | None = None
    form: dict[str, str] = field(default_factory=dict)
    fit_seconds: float = 0.0
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # the fit's JSON

    @property
    def relative_error(self) -> float | None:
        if self.predicted is None or not self.measured:
            return None
        return (self.predicted - self.measured) / self.measured

    @property
    def ok(self) -> bool:
        e = self.relative_error
        return e is not None and abs(e) <= TOLERANCE


def command(case: Case, device: str = "cpu") -> list[str]:
    return [sys.executable, str(REPO / "sample_runs" / case.script), "--device", device, "--log-every", "1000", *case.args]


def run_case(case: Case, workdir: Path, steps: int = 3, device: str = "cpu") -> Result:
    result = Result(case)
    steps = max(steps, case.steps or 0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTOP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "memtop", "fit", "--json", "--no-savings", "--steps", str(steps), "--runs-dir", str(workdir),
         "--vary", f"{case.flag}=" + ",".join(str(v) for v in case.probes), "--at", str(case.far), "--", *command(case, device)],
        capture_output=True, text=True, env=env, cwd=REPO, stdin=subprocess.DEVNULL, timeout=900,
    )
    result.fit_seconds = time.monotonic() - started
    if proc.returncode != 0:
        result.error = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        return result
    data = json.loads(proc.stdout)
    result.data = data
    pred = next(p for p in data["predictions"] if p["value"] == case.far)
    result.predicted = pred["peak_bytes"]
    result.form = {c: f["kind"] for c, f in data["fit"]["categories"].items()}
    argv = command(case, device)
    i = argv.index(str(REPO / "sample_runs" / case.script))
    argv = [*argv[: i + 1], f"--{case.flag}", str(case.far), *argv[i + 1 :]]
    truth = run_probe(ProbeSpec(case.far, argv, f"truth-{case.name}", f"{case.flag}={case.far}"), workdir, steps)
    if not truth.usable:
        result.error = f"the run at {case.flag}={case.far} {truth.status}: {truth.message}"
        return result
    result.measured = truth.peak_bytes
    return result


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f}"


def write_markdown(results: list[Result], steps: int, out: Path) -> None:
    lines = [
        "# `memtop fit` validation (CPU, tracked peak)",
        "",
        f"Written by `python benchmarks/fit_validation.py --steps {steps}` on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Each case fits the peak from three small probe values (`memtop fit --no-savings --vary FLAG=...`), "
        "predicts it at a value at least 4× the largest probe, and runs that value for real "
        f"(`memtop train --max-steps {steps}`). Pass: |predicted − measured| ≤ {TOLERANCE:.0%} of measured.",
        "On a CPU the peak is the tracked peak (parameters + gradients + optimizer state + activations at the step's peak moment).",
        "",
        "| case | script | flag | probes | steps | predicted at | predicted MiB | measured MiB | error | fitted forms | fit time | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        c = r.case
        err = r.relative_error
        forms = ", ".join(f"{k}: {v}" for k, v in r.form.items())
        lines.append(
            f"| {c.name} | {c.script} | --{c.flag} | {', '.join(map(str, c.probes))} | {max(steps, c.steps or 0)} | {c.far} | {_mib(r.predicted)} | {_mib(r.measured)} | "
            f"{'-' if err is None else f'{err:+.1%}'} | {forms or '-'} | {r.fit_seconds:.0f} s | {'pass' if r.ok else 'FAIL ' + r.error} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "validation" / "fit.md")
    p.add_argument("cases", nargs="*", help="case names (default: all)")
    a = p.parse_args(argv)
    chosen = [c for c in CASES if not a.cases or c.name in a.cases]
    results = []
    with tempfile.TemporaryDirectory(prefix="memtop-fit-validation-") as tmp:
        for case in chosen:
            r = run_case(case, Path(tmp) / case.name, a.steps)
            err = r.relative_error
            print(f"{case.name}: predicted {_mib(r.predicted)} MiB, measured {_mib(r.measured)} MiB, "
                  f"{'-' if err is None else f'{err:+.1%}'} {'pass' if r.ok else 'FAIL ' + r.error}", flush=True)
            results.append(r)
    write_markdown(results, a.steps, a.out)
    print(f"wrote {a.out}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
