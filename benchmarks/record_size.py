"""Bytes per step record of the sample runs, as `memtop train` writes them.

Runs each sample script (``sample_runs/*.py``, default sizes, CPU unless CUDA is there) under
``memtop train --no-tui`` for a few hundred steps and reports the rank file's step lines: how
many, their average size, and how many of them are full records (schema 2 writes a full record
now and then and deltas in between; docs/run-format.md).

    python benchmarks/record_size.py [--steps 300] [--runs-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = ("gaussian_splat", "transformer_finetune", "video_pipeline", "image_fit")


def measure(run_dir: Path) -> dict[str, float]:
    lines = [ln for ln in (run_dir / "rank0.jsonl").read_bytes().split(b"\n") if ln.startswith(b'{"type":"step"')]
    full = sum(1 for ln in lines if b'"base":' not in ln)
    total = sum(len(ln) + 1 for ln in lines)
    return {"steps": len(lines), "bytes_per_step": total / max(1, len(lines)), "full_records": full}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--runs-dir", default=None)
    ap.add_argument("--only", default=None, help="comma-separated sample names")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    root = Path(args.runs_dir or tempfile.mkdtemp(prefix="memtop-size-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTOP_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out: dict[str, dict[str, float]] = {}
    names = args.only.split(",") if args.only else SAMPLES
    for name in names:
        cmd = [sys.executable, "-m", "memtop", "train", "--no-tui", "--runs-dir", str(root), "--name", name, "--", sys.executable, str(REPO / "sample_runs" / f"{name}.py"), "--steps", str(args.steps), "--log-every", str(10**6)]
        subprocess.run(cmd, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
        run_dir = max((p for p in root.iterdir() if p.name.endswith("-" + name)), key=lambda p: p.name)
        out[name] = measure(run_dir)
        m = out[name]
        print(f"{name:<22} {int(m['steps']):>6} steps  {m['bytes_per_step']:8.0f} bytes/step  {int(m['full_records'])} full records")
    mean = sum(m["bytes_per_step"] for m in out.values()) / len(out)
    print(f"{'average':<22} {'':>12}  {mean:8.0f} bytes/step")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
