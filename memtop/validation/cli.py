"""Arguments, the no-CUDA and dry-run paths, then the plan through the runner."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

from memtop.validation.plan import FULL_BUDGET_S, QUICK_BUDGET_S, STEP_NAMES, Step, build_plan
from memtop.validation.taskkit import REPO

PREFIX = "gpu-validation"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{PREFIX}: {message} (see --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scripts/gpu_validation.sh", description="Check memtop's CUDA figures on this machine's GPU; raw output into OUTDIR.")
    p.add_argument("outdir", nargs="?", type=Path, help="where logs, run records and summary.md go (created; must be empty)")
    p.add_argument("--quick", action="store_true", help=f"the most important half, within {QUICK_BUDGET_S:.0f} s")
    p.add_argument("--dry-run", action="store_true", help="list the steps and commands, run nothing (works without a GPU)")
    p.add_argument("--only", default=None, help="comma-separated step names (a rerun of some steps)")
    p.add_argument("--budget", type=float, default=None, help="total seconds (default: 450, --quick 170)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.outdir is None and not args.dry_run:
        sys.stderr.write(f"{PREFIX}: OUTDIR is required (see --help)\n")
        return 2
    outdir: Path = Path(os.environ.get("MEMTOP_VALIDATION_CWD", ".")) / (args.outdir or Path("OUTDIR"))
    outdir = outdir.resolve()
    wanted = [n.strip() for n in args.only.split(",") if n.strip()] if args.only is not None else None
    unknown = sorted(set(wanted or []) - set(STEP_NAMES))
    if unknown or wanted == []:
        sys.stderr.write(f"{PREFIX}: unknown step {', '.join(unknown) or repr(args.only)} (steps: {', '.join(STEP_NAMES)})\n")
        return 2
    steps = build_plan(outdir, args.quick, wanted)
    budget = args.budget if args.budget is not None else (QUICK_BUDGET_S if args.quick else FULL_BUDGET_S)
    if budget <= 0:
        sys.stderr.write(f"{PREFIX}: --budget must be positive, got {budget:g}\n")
        return 2
    if args.dry_run:
        print_plan(steps, budget)
        return 0
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        sys.stderr.write(f"{PREFIX}: {outdir} exists and is not an empty directory; give a new OUTDIR\n")
        return 2
    why_not = no_cuda_reason()
    if why_not:
        print(f"{PREFIX}: {why_not}; nothing was run")
        return 0
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"{PREFIX}: cannot create {outdir}: {exc.strerror}\n")
        return 2
    from memtop.validation.runner import run_plan

    header = run_header(args.quick, budget)
    outcomes = run_plan(steps, outdir, budget, header, sys.stdout)
    bad = [o.step.name for o in outcomes if o.status not in ("pass", "skip")]
    print(f"{PREFIX}: {len(outcomes) - len(bad)}/{len(outcomes)} steps passed or skipped; summary in {outdir / 'summary.md'}")
    return 1 if bad else 0


def print_plan(steps: list[Step], budget: float) -> None:
    print(f"{PREFIX} (dry run): {len(steps)} steps, total budget {budget:.0f} s, each in its own process from {REPO}")
    for i, step in enumerate(steps, 1):
        print(f"{i:2d}. {step.name} (timeout {step.timeout_s:.0f} s{', quick' if step.quick else ''}): {step.what}")
        print(f"    $ {''.join(f'{k}={v} ' for k, v in step.env)}{' '.join(step.argv)}")


def no_cuda_reason() -> str | None:
    """Why this machine cannot run the validation, or None when it has a CUDA device."""
    try:
        import torch
    except ImportError as exc:
        return f"torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        return f"no CUDA device here (torch {torch.__version__}: torch.cuda.is_available() is False)"
    return None


def run_header(quick: bool, budget: float) -> dict[str, str]:
    import torch

    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": ("quick" if quick else "full") + f", budget {budget:.0f} s",
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda})",
        "device": _device_name(),
        "commit": _git_commit(),
    }
    return header


def _device_name() -> str:
    """From NVML, so that this process makes no CUDA context (it would show in the NVML step)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
        return f"{name.decode() if isinstance(name, bytes) else name}, {int(total) / 2**30:.1f} GiB (NVML index 0)"
    except Exception as exc:  # noqa: BLE001 - NVML missing or failing: the header says so, the run goes on
        return f"unknown (NVML: {exc})"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
