"""How long `memtop analyze` takes on a long run (target: under 1 s for 100,000 and 1,000,000 steps).

Writes a synthetic run shaped like the hook's output (both moments, 16 large tensors per step, a
leak-free CUDA-shaped series with noise and one spike): by default with the hook's own record
writer (run format v2: full records, deltas and the step index ``rank0.jsonl.idx``;
tests/longrun.py), or with ``--writer v1`` as run format v1 wrote it (every record full, no step
index), then times:

* the whole CLI, `python -m memtop analyze RUN` and `--json`, as a user runs it (interpreter start,
  imports, reading, analysis, rendering), median of N runs;
* the phases in one process: the sampled loader, the report, the renderers;
* for comparison, decoding every record (`memtop.runs.reader.load_run`; skipped with `--no-full`).

A v2 run is read through the hook's step index from the first analysis on (nothing is written
into the run directory). A v1 run's first analysis scans every line and saves the scan in
`analysis-index.json`; later ones read only the lines it names. Both are timed: the CLI with
`analysis-index.json` removed before each run ("first") and with it in place, if any.

    python benchmarks/analyze_speed.py [--steps 100000] [--writer v2|v1] [--repeat 5] [--keep DIR [--reuse]] [--no-full]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from longrun import write_hook_run  # noqa: E402

from memtop.analyzers.load import load_for_analysis  # noqa: E402
from memtop.analyzers.report import build, to_json  # noqa: E402
from memtop.analyzers.scan_index import INDEX_FILE  # noqa: E402
from memtop.render.json import dumps  # noqa: E402
from memtop.render.text import render  # noqa: E402
from memtop.runs.reader import load_run  # noqa: E402

CPU: list[float] = []  # CPU seconds (user + system) of each timed CLI run


def _cli(run: Path, *extra: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTOP_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "memtop", "analyze", str(run), *extra], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", default=None, help="write the run here and keep it")
    ap.add_argument("--reuse", action="store_true", help="with --keep: use the run already there")
    ap.add_argument("--no-full", action="store_true", help="do not time decoding every record")
    ap.add_argument("--writer", choices=("v2", "v1"), default="v2", help="the hook's writer (v2), or every record full and no step index (v1)")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="memtop-bench-"))
    t0 = time.perf_counter()
    existing = root / "20261122-120000-long"
    if args.reuse and (existing / "rank0.jsonl").is_file():
        run = existing
    else:  # v1: the same records, every one full, no step index
        run = write_hook_run(root, args.steps, deltas=args.writer == "v2", index=args.writer == "v2")
    index = run / INDEX_FILE
    size = (run / "rank0.jsonl").stat().st_size
    print(f"wrote {args.steps} steps ({size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s: {run}")

    # an installed memtop has its bytecode compiled (pip does it); do the same for this checkout
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "memtop")], check=True)
    index.unlink(missing_ok=True)
    _cli(run, "--no-plot")  # warm the page cache
    scan, scan_cpu = [], []
    for _ in range(args.repeat):
        index.unlink(missing_ok=True)
        CPU.clear()
        scan.append(_cli(run))
        scan_cpu.append(CPU[0])
    CPU.clear()
    text = [_cli(run) for _ in range(args.repeat)]
    js = [_cli(run, "--json") for _ in range(args.repeat)]
    empty_start = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "memtop", "--version"], capture_output=True, check=True)
        empty_start.append(time.perf_counter() - t)

    phases: dict[str, list[float]] = {"load (scan)": [], "load (index)": [], "report": [], "render text": [], "render json": []}
    for _ in range(args.repeat):
        t = time.perf_counter()
        load_for_analysis(run, save_index=False, use_index=False)
        phases["load (scan)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        data, series = load_for_analysis(run)
        phases["load (index)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        rep = build(data, series, detect_flags=False)
        phases["report"].append(time.perf_counter() - t)
        t = time.perf_counter()
        render(rep)
        phases["render text"].append(time.perf_counter() - t)
        t = time.perf_counter()
        dumps(to_json(rep))
        phases["render json"].append(time.perf_counter() - t)
    full = None
    if not args.no_full:
        t = time.perf_counter()
        load_run(run)
        full = time.perf_counter() - t

    med = statistics.median
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    hooked = (run / "rank0.jsonl.idx").is_file()
    print(f"run format {'v2 (step index)' if hooked else 'v1 (no step index)'}: {size / max(1, args.steps):.0f} bytes per step")
    print(f"memtop analyze RUN, first   median {med(scan):.3f} s wall, {med(scan_cpu):.3f} s CPU  (no analysis-index.json: the first analysis)")
    print(f"memtop analyze RUN          median {med(text):.3f} s  (min {min(text):.3f}, max {max(text):.3f}; {args.repeat} runs)")
    print(f"memtop analyze RUN --json   median {med(js):.3f} s  (min {min(js):.3f}, max {max(js):.3f})")
    print(f"CPU time of the indexed runs median {med(CPU):.3f} s  (user + system; the wall time includes waiting for a busy CPU)")
    print(f"python -m memtop --version  median {med(empty_start):.3f} s  (interpreter start + CLI imports)")
    for name, vals in phases.items():
        print(f"  {name:<16} median {med(vals):.3f} s")
    if full is not None:
        print(f"  decode every record (load_run): {full:.3f} s")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
