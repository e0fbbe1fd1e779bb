"""Check the advisor's estimates by applying them: profile, take every suggestion, run again, measure.

Each script (the sample runs, and small scripts in the shapes users have: a plain loop with and
without an accumulation flag, an LSTM, a conv net, a nanoGPT-style configurator script, an HF
Trainer-shaped and a Lightning-shaped script, under benchmarks/scripts/) is profiled with
``memtop train --no-tui --max-steps N`` on this machine. For *every* quantified suggestion the
advisor makes, the change is applied — the suggestion's own command line, or, for a code change,
the same edit pre-written in the script behind ``VALIDATE_CODE_CHANGE`` — the run is profiled the
same way, and the estimate is compared with the measured change of the step's peak (the allocator
peak on CUDA, the tracked peak on CPU).

    python benchmarks/advisor_validation.py [--steps N] [--device auto|cpu|cuda] [--out FILE] [SCRIPT|RULE...]

tests/test_advisor_validation.py runs a short form (a few steps, a few scripts).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from memtop.analyzers.advice import Suggestion, suggest  # noqa: E402
from memtop.analyzers.cmdline import join  # noqa: E402
from memtop.analyzers.series import rank_series  # noqa: E402
from memtop.analyzers.summary import Peak, find_peak  # noqa: E402
from memtop.runs.reader import load_run  # noqa: E402
from memtop.runs.rundir import list_runs  # noqa: E402

TOLERANCE = 0.15
SMALL = 0.01  # a measured change under 1% of the peak is compared in absolute terms (±1% of the peak)
SKIPPED_RULES = ("leak",)  # a leak fix is a code change with no fixed form: validated by leak_case
S = "benchmarks/scripts"


@dataclass(frozen=True)
class CodeChange:
    """How to apply a code-change suggestion to this script: the command and environment of the
    edited script (the edit is pre-written behind VALIDATE_CODE_CHANGE)."""

    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Script:
    name: str
    command: tuple[str, ...]  # the baseline child command
    code_changes: dict[str, CodeChange] = field(default_factory=dict)
    cwd: str = ""  # where it runs, relative to the repository root (nanoGPT runs from its own directory)


PLAIN = ("python", f"{S}/plain_loop.py", "--batch-size", "2048")
NOACCUM = ("python", f"{S}/plain_loop_noaccum.py", "--batch-size", "2048")
NANO = ("python", "train.py", "--batch_size=8")
HF = ("python", f"{S}/hf_trainer_style.py", "--per_device_train_batch_size", "8")
SCRIPTS = [
    Script("plain loop (accumulation flag)", PLAIN, {"mixed_precision": CodeChange(PLAIN, (("VALIDATE_CODE_CHANGE", "autocast"),))}),
    Script(
        "plain loop (no accumulation flag)",
        NOACCUM,
        {
            "batch_accumulation": CodeChange(("python", f"{S}/plain_loop_noaccum.py", "--batch-size", "1024"), (("VALIDATE_CODE_CHANGE", "accumulate"),)),
            "mixed_precision": CodeChange(NOACCUM, (("VALIDATE_CODE_CHANGE", "autocast"),)),
        },
    ),
    Script("LSTM", ("python", f"{S}/lstm_lm.py", "--batch-size", "32")),
    Script("conv net", ("python", f"{S}/convnet.py", "--batch-size", "32")),
    # Where memtop cannot read the flags yet (configurator globals, HfArgumentParser bools), the
    # change is applied with the script's own flag, as a user would after reading the code change.
    Script(
        "nanoGPT-style configurator",
        NANO,
        {
            "mixed_precision": CodeChange((*NANO, "--dtype=bfloat16")),
            "gradient_checkpointing": CodeChange((*NANO, "--gradient_checkpointing=True")),
            "batch_accumulation": CodeChange(("python", "train.py", "--batch_size=4", "--gradient_accumulation_steps=2")),
        },
        cwd=f"{S}/nanogpt_style",
    ),
    Script("HF Trainer-style", HF, {"mixed_precision": CodeChange((*HF, "--bf16")), "gradient_checkpointing": CodeChange((*HF, "--gradient_checkpointing"))}),
    Script("Lightning-style", ("python", f"{S}/lightning_style.py", "--batch_size", "32")),
    Script("sample: transformer fine-tune", ("python", "sample_runs/transformer_finetune.py", "--batch-size", "8", "--seq-len", "64")),
    Script("sample: transformer, checkpointing on", ("python", "sample_runs/transformer_finetune.py", "--batch-size", "8", "--n-layers", "4", "--gradient-checkpointing")),
    Script("sample: image fit", ("python", "sample_runs/image_fit.py", "--resolution", "64")),
    Script("sample: Gaussian splatting", ("python", "sample_runs/gaussian_splat.py", "--num-gaussians", "20000")),
    Script("sample: video pipeline", ("python", "sample_runs/video_pipeline.py", "--max-frames", "8")),
]


# Why a suggestion's estimate misses by more than the tolerance, where the cause is known.
DEVIATIONS: dict[str, str] = {
    "mixed_precision@sample: transformer fine-tune": (
        "autocast casts a shared input once per matmul, so the input of the separate q/k/v projections becomes three "
        "bf16 copies of one fp32 tensor (1.5× its bytes); those inputs (256 KiB each) are under the 1 MiB listing "
        "threshold, so the estimate cannot see the sharing and is high. With a fused qkv projection (the nanoGPT- and "
        "HF-style scripts) the estimate is within the tolerance."
    ),
    "lora@sample: transformer fine-tune": (
        "with the base weights frozen, backward needs no weight gradient there, so the frozen linear layers stop saving "
        "their inputs as well; the estimate counts only the gradients and optimizer state that go, so it is low "
        "(conservative)."
    ),
    "costly_saving_off@sample: transformer, checkpointing on": (
        "with checkpointing on, the hook measures only the kept block inputs (and, with the peak at the optimizer step, "
        "lists no saved tensor to tell them from the loss/logits), so the activations without checkpointing are the "
        "kept bytes × 8 (a transformer block's typical ratio); this block's ratio is ≈11 (a 4× MLP and attention "
        "probabilities), and the loss/logits do not grow at all. Its confidence is low for that reason."
    ),
}


@dataclass
class Result:
    script: Script
    suggestion: Suggestion
    applied: str  # "command", "code change", or why it was not applied
    baseline: Peak | None
    after: Peak | None
    after_command: tuple[str, ...] = ()
    after_env: tuple[tuple[str, str], ...] = ()
    error: str = ""

    @property
    def measured(self) -> int | None:
        if self.baseline is None or self.after is None:
            return None
        return self.baseline.bytes - self.after.bytes

    @property
    def relative_error(self) -> float | None:
        m, e = self.measured, self.suggestion.saving_bytes
        if m is None or e is None or not m:
            return None
        return abs(e - m) / abs(m)

    @property
    def ok(self) -> bool:
        m, e = self.measured, self.suggestion.saving_bytes
        if m is None or e is None or self.baseline is None:
            return False
        if abs(m) < SMALL * self.baseline.bytes:
            return abs(e - m) <= SMALL * self.baseline.bytes
        return abs(e - m) <= TOLERANCE * abs(m)


def profile(command: tuple[str, ...], runs_dir: Path, steps: int, name: str, env_extra: tuple[tuple[str, str], ...] = (), cwd: str = "") -> Path:
    """Run ``command`` under ``memtop train`` (headless) and return its run directory."""
    env = dict(os.environ)
    env.pop("MEMTOP_RUN_DIR", None)
    env["MEMTOP_ACTIVATIONS"] = "every"  # measure activations at every step: the peak is exact
    env.update(dict(env_extra))
    # `python` in the commands is this interpreter (so the printed commands read as a user types them)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    argv = [sys.executable, "-m", "memtop", "train", "--no-tui", "--runs-dir", str(runs_dir), "--name", name, "--max-steps", str(steps), "--", *command]
    proc = subprocess.run(argv, cwd=REPO / cwd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{join(list(command))} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-400:]}")
    runs = [p for p in list_runs(runs_dir) if p.name.endswith(name)]
    if not runs:
        raise RuntimeError(f"no run directory for {name}")
    return runs[0]


def peak_of(run_dir: Path) -> Peak | None:
    return find_peak(rank_series(load_run(run_dir)))


def _tag(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40]


def baseline_suggestions(script: Script, workdir: Path, steps: int) -> tuple[Path, list[Suggestion]]:
    base = profile(script.command, workdir, steps, f"{_tag(script.name)}-base", cwd=script.cwd)
    return base, [s for s in suggest(load_run(base)) if s.saving_bytes is not None and s.rule not in SKIPPED_RULES]


def apply(script: Script, s: Suggestion, base: Path, workdir: Path, steps: int, i: int) -> Result:
    baseline = peak_of(base)
    if s.command is not None:
        command, env, how = tuple(s.command), s.env, "command"
    elif s.rule in script.code_changes:
        cc = script.code_changes[s.rule]
        command, env, how = cc.command, cc.env, "code change"
    else:
        return Result(script, s, "not applied: a code change this script has no pre-written form of", baseline, None)
    try:
        after = profile(command, workdir, steps, f"{_tag(script.name)}-{i}-{s.rule}", env, script.cwd)
    except RuntimeError as exc:
        return Result(script, s, how, baseline, None, command, env, error=str(exc))
    return Result(script, s, how, baseline, peak_of(after), command, env)


def run_script(script: Script, workdir: Path, steps: int, rules: set[str] | None = None) -> list[Result]:
    """Every suggestion for this script applied (or only those of ``rules``)."""
    base, sugs = baseline_suggestions(script, workdir, steps)
    return [apply(script, s, base, workdir, steps, i) for i, s in enumerate(sugs) if not rules or s.rule in rules]


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

    base = ("python", "sample_runs/transformer_finetune.py", "--batch-size", "8", "--seq-len", "64")
    leaky = analyze(rank_series(load_run(profile((*base, "--leak"), workdir, steps, "leak-mode"))))
    normal = analyze(rank_series(load_run(profile(base, workdir, steps, "leak-normal"))))
    return LeakResult(list(base), steps, leaky.verdict, leaky.bytes_per_step, leaky.growing_series, normal.verdict)


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.2f} MiB"


def _change(r: Result) -> str:
    if r.applied == "command":
        return f"`{join(list(r.after_command), dict(r.after_env))}`"
    if r.applied == "code change":
        env = " ".join(f"{k}={v}" for k, v in r.after_env)
        return f"code change (applied as `{env} {join(list(r.after_command))}`)"
    return r.applied


def verdict(r: Result) -> str:
    if r.error:
        return "FAILED to run"
    if r.after is None:
        return "not applied"
    return "yes" if r.ok else "NO"


def to_markdown(results: list[Result], steps: int, seconds: float, device: str, leak: LeakResult | None = None) -> str:
    import torch

    applied = [r for r in results if r.after is not None]
    passed = [r for r in applied if r.ok]
    lines = [
        f"# Advisor estimates on {device}, checked by applying every suggestion",
        "",
        f"Generated by `python benchmarks/advisor_validation.py --steps {steps}` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {seconds:.0f} s). Each script is "
        "profiled with `memtop train --no-tui --max-steps N` (activations measured at every step); *every* quantified "
        "suggestion the advisor makes is applied — its own command line, or for a code change the same edit pre-written "
        "in the script behind `VALIDATE_CODE_CHANGE` — and profiled the same way. **Measured** is the change of the step's "
        "peak over the run (the allocator peak on CUDA; on CPU, which has no allocator counter, the tracked peak: the "
        "largest parameters + gradients + optimizer state + activations at either moment of a step). "
        f"Pass: within {TOLERANCE:.0%} of the measured change (a change under {SMALL:.0%} of the peak: within {SMALL:.0%} of the peak). "
        "A negative figure is memory the change costs (headroom, turning a saving off).",
        "",
        f"**{len(passed)} of {len(applied)} applied suggestions are within the tolerance**; "
        f"{len(results) - len(applied)} could not be applied automatically.",
        "",
        "| script | suggestion | change applied | estimated | measured (peak before → after) | error | pass |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        s = r.suggestion
        err = f"{r.relative_error:.1%}" if r.relative_error is not None else "n/a"
        meas = f"{_mib(r.measured)} ({_mib(r.baseline.bytes if r.baseline else None)} → {_mib(r.after.bytes if r.after else None)})" if r.after else "n/a"
        lines.append(f"| {r.script.name} | {s.rule}: {s.title} | {_change(r)} | {_mib(s.saving_bytes)} | {meas} | {err} | {verdict(r)} |")
    lines += ["", "Baseline commands:", ""]
    seen: set[str] = set()
    for r in results:
        if r.script.name not in seen:
            seen.add(r.script.name)
            where = f"(in {r.script.cwd}) " if r.script.cwd else ""
            lines.append(f"- {r.script.name}: {where}`memtop train --no-tui --max-steps {steps} -- {join(list(r.script.command))}`")
    lines += ["", "What each estimate assumes, as the advisor states it:", ""]
    lines += [f"- {r.script.name}, {r.suggestion.rule}: {r.suggestion.assumption}" for r in results if r.suggestion.assumption]
    missed = [r for r in results if r.after is not None and not r.ok]
    lines += ["", "## Not within the tolerance, and why", ""]
    if not missed:
        lines.append("Every applied suggestion is within the tolerance.")
    for r in missed:
        why = DEVIATIONS.get(f"{r.suggestion.rule}@{r.script.name}", "cause not yet understood.")
        lines.append(f"- {r.script.name}, {r.suggestion.rule} (estimated {_mib(r.suggestion.saving_bytes)}, measured {_mib(r.measured)}): {why}")
    skipped = [r for r in results if r.after is None and not r.error]
    if skipped:
        lines += ["", "Not applied (code changes without a pre-written form in the script; their estimates use the same "
                  "arithmetic as the applied ones of the same rule): "
                  + ", ".join(f"{r.script.name} {r.suggestion.rule}" for r in skipped) + "."]
    failed = [r for r in results if r.error]
    if failed:
        lines += ["", "Runs that failed:", ""]
        lines += [f"- {r.script.name}, {r.suggestion.rule}: {r.error}" for r in failed]
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
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default=None, help="write the markdown table here")
    ap.add_argument("--no-leak", action="store_true", help="skip the leak-detection check")
    ap.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="cuda: only the sample runs (they pick CUDA themselves; the scripts in users' shapes are CPU-only)",
    )
    ap.add_argument("names", nargs="*", help="script names and/or rule names to restrict to (default: all)")
    args = ap.parse_args()
    names = set(args.names)
    script_names = names & {s.name for s in SCRIPTS}
    rules = names - script_names or None
    pool = [s for s in SCRIPTS if s.name.startswith("sample:")] if args.device == "cuda" else SCRIPTS
    chosen = [s for s in pool if not script_names or s.name in script_names]
    t0 = time.time()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="memtop-validate-") as tmp:
        for script in chosen:
            for r in run_script(script, Path(tmp), args.steps, rules):
                results.append(r)
                print(f"{script.name} | {r.suggestion.rule}: estimated {_mib(r.suggestion.saving_bytes)}, measured {_mib(r.measured)} "
                      f"[{verdict(r)}] {r.error[:200]}", flush=True)
        leak = None if args.no_leak or names else leak_case(Path(tmp))
        if leak is not None:
            print(f"leak: {leak.leaky_verdict} ({leak.leaky_rate}), normal run: {leak.normal_verdict}", flush=True)
    device = "CUDA" if any(r.baseline is not None and r.baseline.measure == "allocator_peak" for r in results) else "CPU"
    md = to_markdown(results, args.steps, time.time() - t0, device, leak)
    if args.out:
        Path(args.out).write_text(md, encoding="utf-8")
    else:
        print(md)
    leak_ok = leak is None or (leak.leaky_verdict == "leak" and leak.normal_verdict == "none")
    return 0 if leak_ok and all(r.ok for r in results if r.after is not None) else 1


if __name__ == "__main__":
    raise SystemExit(main())
