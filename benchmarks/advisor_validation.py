"""Check the advisor's estimates by applying them: run, take the suggestion, run again, measure.

For each case a sample run is profiled with ``memtop train`` on this machine, the advisor is asked
for its suggestions, the named rule's *own* new command line is run the same way, and the saving
measured in the category the suggestion targets (at the peak step) is compared with the estimate.

    python benchmarks/advisor_validation.py [--steps N] [--out docs/validation/advisor-cpu.md] [CASE...]

tests/test_advisor_validation.py runs the same cases (a few steps each).
"""

from __future__ import annotations

import argparse
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

from memtop.analyzers.advice import Suggestion, suggest  # noqa: E402
from memtop.analyzers.cmdline import join  # noqa: E402
from memtop.analyzers.series import rank_series  # noqa: E402
from memtop.analyzers.summary import find_peak  # noqa: E402
from memtop.runs.reader import load_run  # noqa: E402
from memtop.runs.rundir import list_runs  # noqa: E402

TOLERANCE = 0.15
MODEL_STATE = ("parameters", "gradients", "optimizer_state")


@dataclass(frozen=True)
class Case:
    name: str
    command: list[str]  # the baseline child command (run from the repo root)
    rule: str  # the suggestion to apply
    required: bool = True  # False: reported, not held to the tolerance (a known deviation)


CASES = [
    Case("batch+accumulation", ["python", "sample_runs/transformer_finetune.py", "--batch-size", "8", "--seq-len", "64"], "batch_accumulation"),
    Case("gradient checkpointing", ["python", "sample_runs/transformer_finetune.py", "--batch-size", "8", "--n-layers", "4"], "gradient_checkpointing"),
    Case("bf16 autocast", ["python", "sample_runs/image_fit.py", "--resolution", "64"], "mixed_precision"),
    Case("fp16 SH storage", ["python", "sample_runs/gaussian_splat.py", "--num-gaussians", "20000"], "half_precision"),
    Case("fewer frames", ["python", "sample_runs/video_pipeline.py", "--max-frames", "8"], "frames"),
    Case("lower resolution", ["python", "sample_runs/image_fit.py", "--resolution", "64"], "resolution", required=False),
    Case("bf16 autocast (transformer)", ["python", "sample_runs/transformer_finetune.py", "--batch-size", "8", "--seq-len", "64"], "mixed_precision", required=False),
]


@dataclass
class Result:
    case: Case
    suggestion: Suggestion | None
    baseline_bytes: int | None
    after_bytes: int | None
    error: str = ""

    @property
    def measured(self) -> int | None:
        if self.baseline_bytes is None or self.after_bytes is None:
            return None
        return self.baseline_bytes - self.after_bytes

    @property
    def relative_error(self) -> float | None:
        m = self.measured
        if m is None or not m or self.suggestion is None or self.suggestion.saving_bytes is None:
            return None
        return abs(self.suggestion.saving_bytes - m) / abs(m)

    @property
    def ok(self) -> bool:
        e = self.relative_error
        return e is not None and e <= TOLERANCE


def profile(command: list[str], runs_dir: Path, steps: int, name: str) -> Path:
    """Run ``command`` under ``memtop train`` (headless) and return its run directory."""
    env = dict(os.environ)
    env.pop("MEMTOP_RUN_DIR", None)
    env["MEMTOP_ACTIVATIONS"] = "every"  # measure activations at every step: the peak is exact
    # `python` in the commands is this interpreter (so the printed commands read as a user types them)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    argv = [sys.executable, "-m", "memtop", "train", "--no-tui", "--runs-dir", str(runs_dir), "--name", name, "--max-steps", str(steps), "--", *command]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{join(command)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    runs = [p for p in list_runs(runs_dir) if p.name.endswith(name)]
    if not runs:
        raise RuntimeError(f"no run directory for {name}")
    return runs[0]


def _value(composition: dict, category: str | None) -> int | None:
    if category == "model_state":
        return sum(composition.get(c) or 0 for c in MODEL_STATE)
    v = composition.get(category) if category else None
    return int(v) if isinstance(v, int) else None


def peak_point(run_dir: Path) -> str | None:
    peak = find_peak(rank_series(load_run(run_dir)))
    return peak.peak_point if peak else None


def measure(run_dir: Path, category: str | None, point: str | None) -> int | None:
    """The targeted category's largest value over the steps, at the moment the estimate was made.

    Step records carry the composition at both moments of a step (``moments``); the estimate was
    made at the baseline's peak moment, so the after-run is read at that same moment (its own peak
    may move to the other one).
    """
    run = load_run(run_dir)
    if category is None:
        peak = find_peak(rank_series(run))
        return peak.bytes if peak else None
    best: int | None = None
    for rec in run.steps():
        moments = rec.get("moments") if isinstance(rec.get("moments"), dict) else {}
        comp = moments.get(point) if point and isinstance(moments.get(point), dict) else rec.get("categories")
        v = _value(comp or {}, category)
        if v is not None and (best is None or v > best):
            best = v
    return best


def run_case(case: Case, workdir: Path, steps: int) -> Result:
    tag = case.name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_")
    base = profile(case.command, workdir, steps, f"{tag}-before")
    found = [s for s in suggest(load_run(base)) if s.rule == case.rule]
    if not found or found[0].command is None:
        return Result(case, found[0] if found else None, None, None, error=f"no {case.rule} suggestion with a command line")
    s = found[0]
    after = profile(list(s.command), workdir, steps, f"{tag}-after")
    point = peak_point(base)
    return Result(case, s, measure(base, s.category, point), measure(after, s.category, point))


@dataclass
class LeakResult:
    command: list[str]
    steps: int
    leaky_verdict: str
    leaky_rate: float | None
    leaky_series: list[str]
    normal_verdict: str


def leak_case(workdir: Path, steps: int = 20) -> LeakResult:
    """The transformer with --leak (keeps every loss with its graph, and the logits) and without."""
    from memtop.analyzers.leak import analyze

    base = ["python", "sample_runs/transformer_finetune.py", "--batch-size", "8", "--seq-len", "64"]
    leaky = analyze(rank_series(load_run(profile([*base, "--leak"], workdir, steps, "leak-mode"))))
    normal = analyze(rank_series(load_run(profile(base, workdir, steps, "leak-normal"))))
    return LeakResult(base, steps, leaky.verdict, leaky.bytes_per_step, leaky.growing_series, normal.verdict)


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.2f} MiB"


def to_markdown(results: list[Result], steps: int, seconds: float, leak: LeakResult | None = None) -> str:
    import torch

    lines = [
        "# Advisor estimates on CPU, checked by applying them",
        "",
        f"Generated by `python benchmarks/advisor_validation.py --steps {steps}` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {seconds:.0f} s). Each case profiles "
        "a sample run with `memtop train --no-tui --max-steps N` (activations measured at every step), takes the advisor's "
        "suggestion for the named rule, runs *the suggestion's own command line* the same way, and compares the estimated "
        "saving with the saving measured in the category the suggestion targets: its largest value over the steps, at the "
        "moment of the step the estimate was made for (the baseline's peak moment, `forward_end` here). "
        f"Pass: within {TOLERANCE:.0%} of the measured saving.",
        "",
        "On CPU there is no allocator peak, so the figures are the tracked categories "
        "(`model_state` = parameters + gradients + optimizer state).",
        "",
        "| case | suggestion (new command) | category | estimated | measured | error | pass |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        s = r.suggestion
        err = f"{r.relative_error:.1%}" if r.relative_error is not None else "n/a"
        change = f"`{s.change}`" if s else r.error
        lines.append(
            f"| {r.case.name} | {change} | {s.category if s else ''} | {_mib(s.saving_bytes if s else None)} | "
            f"{_mib(r.measured)} (from {_mib(r.baseline_bytes)} to {_mib(r.after_bytes)}) | {err} | {'yes' if r.ok else ('NO' if r.case.required else 'no (reported only)')} |"
        )
    lines += ["", "Baseline commands:", ""]
    lines += [f"- {r.case.name}: `memtop train --no-tui --max-steps {steps} -- {join(r.case.command)}`" for r in results]
    lines += ["", "The assumptions behind each estimate, as the advisor states them:", ""]
    lines += [f"- {r.case.name}: {r.suggestion.assumption}" for r in results if r.suggestion]
    lines += [
        "",
        "Notes on the deviations:",
        "",
        "- *gradient checkpointing*: the hook counts the tensors autograd saved; under non-reentrant checkpointing the "
        "kept block inputs sit in the checkpoint's holder objects, which the hook does not count, so the measured drop is "
        "all of the blocks' activations while the estimate keeps ≈1/8 of them (the inputs that really stay alive).",
        "- *bf16 autocast (transformer)*: autocast casts a shared input once per matmul, so the input of the separate "
        "q/k/v projections becomes three bf16 copies of one fp32 tensor (1.5× its bytes); these inputs (256 KiB each) are "
        "below the 1 MiB listing threshold, so the estimate cannot see that, and the estimate is 17% high. On the image-fitting MLP, "
        "where every matmul has its own input, the estimate is within 1%.",
        "- *fewer frames*: the decoder's activations (per clip, not per frame) do not shrink with the frames; they are "
        "below the 1 MiB listing threshold, so the estimate assumes every saved byte scales.",
    ]
    if leak is not None:
        lines += [
            "",
            "## Leak detection",
            "",
            f"`memtop train --no-tui --max-steps {leak.steps} -- {join(leak.command)} --leak` (the loss is kept with its "
            f"graph every step, and the logits): verdict **{leak.leaky_verdict}**, "
            + (f"{leak.leaky_rate / 2**20:.2f} MiB/step in {', '.join(leak.leaky_series)}" if leak.leaky_rate is not None else "no rate")
            + ". On CPU the kept tensors are outside the four tracked categories, so the process RSS is what grows.",
            "",
            f"The same command without `--leak`: verdict **{leak.normal_verdict}**.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=None, help="write the markdown table here")
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    args = ap.parse_args()
    chosen = [c for c in CASES if not args.cases or c.name in args.cases or c.rule in args.cases]
    t0 = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="memtop-validate-") as tmp:
        for case in chosen:
            r = run_case(case, Path(tmp), args.steps)
            results.append(r)
            print(f"{case.name}: estimated {_mib(r.suggestion.saving_bytes if r.suggestion else None)}, measured {_mib(r.measured)}, "
                  f"error {r.relative_error if r.relative_error is None else f'{r.relative_error:.1%}'} {r.error}", flush=True)
        leak = leak_case(Path(tmp)) if not args.cases else None
        if leak is not None:
            print(f"leak: {leak.leaky_verdict} ({leak.leaky_rate}), normal run: {leak.normal_verdict}", flush=True)
    md = to_markdown(results, args.steps, time.time() - t0, leak)
    if args.out:
        Path(args.out).write_text(md, encoding="utf-8")
    else:
        print(md)
    leak_ok = leak is None or (leak.leaky_verdict == "leak" and leak.normal_verdict == "none")
    return 0 if leak_ok and all(r.ok for r in results if r.case.required) else 1


if __name__ == "__main__":
    raise SystemExit(main())
