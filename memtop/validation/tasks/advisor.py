"""The advisor's estimated savings checked by applying them, on CUDA: benchmarks/advisor_validation.py
(its sample runs pick CUDA by themselves, ``--device auto``), so peaks are the allocator's. A subset
of its cases keeps this inside the time budget; its own markdown table is the section below."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from memtop.validation.taskkit import REPO, Result, run_logged, task_args

CASES = ["batch_accumulation", "gradient_checkpointing", "mixed_precision", "half_precision"]
SCRIPT = REPO / "benchmarks" / "advisor_validation.py"


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    # its commands say `python`; a GPU machine may only have python3
    bindir = Path(tempfile.mkdtemp(prefix="memtop-python-"))
    (bindir / "python").symlink_to(sys.executable)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    helptext = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, env=env, cwd=REPO).stdout
    extra = ["--device", "cuda"] if "--device" in helptext else []
    out_md = args.step_dir / "advisor-cuda.md"
    cases = CASES[:2] if args.quick else CASES
    proc = run_logged([sys.executable, str(SCRIPT), "--steps", "4", *extra, "--out", str(out_md), *cases], args.step_dir / "advisor.log", 170, env)
    if proc.timed_out:
        res.fail("advisor_validation.py did not finish within 170 s")
    elif proc.rc != 0:
        res.fail(f"advisor_validation.py exited {proc.rc}: an estimate outside its tolerance or a failed case (advisor.log)")
    if out_md.is_file():
        # its headings one level below the summary's step sections
        res.note("\n".join("###" + ln[1:] if ln.startswith("#") else ln for ln in out_md.read_text().splitlines()))
    lines = [ln for ln in proc.text().splitlines() if "estimated" in ln]
    res.headline = f"{len(lines)} cases; exit {proc.rc}" + (": " + "; ".join(ln[:80] for ln in lines[:4]) if lines else "")
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
