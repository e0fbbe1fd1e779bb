"""A run of a million steps: the dashboard stays responsive while it reads it, and its memory stays bounded.

Writes a run of --steps step records (default 1,000,000, CUDA-shaped, 3 large tensors each, about
1 KB a record), marks it as still running, then opens `python -m memtop watch RUN` in a 160×48
pseudo-terminal and measures:

* first frame; the time until the latest step is on the screen (a big file is read from its tail
  first); the time until the whole file is read (the header stops saying "reading the run");
* how fast a key is answered while the file is being read (`?` opens the help; the time until
  its text is on the screen), several times during the catch-up;
* the dashboard's resident memory during and after the catch-up (the timeline is decimated to
  1,024 points per rank and only a window of records is kept, so it must not grow with the run).

    python benchmarks/dashboard_long_run.py [--steps 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dashboard_pty import Terminal  # noqa: E402
from runfactory import GiB, MiB, step_record  # noqa: E402


def write_run(root: Path, steps: int) -> Path:
    from memtop.runs.rundir import write_meta

    run = root / "20261122-120000-million"
    run.mkdir(parents=True)
    write_meta(
        run,
        {
            "schema": 1, "run_id": run.name, "command": ["python", "train.py", "--batch-size", "32"],
            "cwd": str(root), "started_at": 1_700_000_000.0, "ended_at": None, "exit_code": None,
            "status": "running", "host": "elsewhere", "pid": 1,
            "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "total_bytes": 80 * GiB, "kind": "cuda"}],
            "detected_flags": [],
        },
    )
    # One record rendered once; the per-step fields are substituted as text (json.dumps per record
    # would make writing the fixture slower than reading it).
    template = json.dumps(step_record(1, activations=6 * GiB, fragmentation=300 * MiB), separators=(",", ":"))
    head, _, rest = template.partition('"step":1,')
    with open(run / "rank0.jsonl", "w", encoding="utf-8") as fh:
        buf = []
        for step in range(1, steps + 1):
            buf.append(f'{head}"step":{step},{rest}\n')
            if len(buf) >= 10_000:
                fh.write("".join(buf))
                buf.clear()
        fh.write("".join(buf))
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="write the run here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="memtop-long-"))
    try:
        t = time.perf_counter()
        run = write_run(root, args.steps)
        size = (run / "rank0.jsonl").stat().st_size
        print(f"wrote {args.steps:,} records, {size / 2**20:.0f} MiB, in {time.perf_counter() - t:.1f} s")
        term = Terminal([sys.executable, "-m", "memtop", "watch", str(run)])
        proc = psutil.Process(term.proc.pid)
        rss: list[float] = []
        latencies: list[float] = []
        try:
            first = term.wait_for("memtop", 60)
            current = term.wait_for(f"step {args.steps:,}", 60)  # the latest figures (read from the tail first)
            done = None
            while done is None:
                rss.append(proc.memory_info().rss / 2**20)
                # A key while reading: open the help, time it, close it.
                term.clear()
                sent = time.perf_counter()
                term.send(b"?")
                try:
                    term.wait_for("pause / resume the display", 30)
                    latencies.append(time.perf_counter() - sent)
                finally:
                    term.send(b"\x1b")
                # Read to the end when the header stops saying "reading the run" (it repaints every second).
                term.clear()
                time.sleep(1.5)
                if b"reading the run" not in term.output():
                    done = time.perf_counter() - term.started - 1.5
                if time.perf_counter() - term.started > 900:
                    raise TimeoutError("did not finish reading in 15 minutes")
            idle: list[float] = []
            for _ in range(5):
                term.clear()
                sent = time.perf_counter()
                term.send(b"?")
                term.wait_for("pause / resume the display", 30)
                idle.append(time.perf_counter() - sent)
                term.send(b"\x1b")
                time.sleep(0.5)
            time.sleep(3)
            after = []
            for _ in range(3):
                time.sleep(1)
                after.append(proc.memory_info().rss / 2**20)
        finally:
            term.close()
        print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
        print(f"first frame {first:.2f} s; latest step on screen after {current:.2f} s; whole run read after ≈{done:.0f} s ({args.steps / done:,.0f} records/s)")
        lat = sorted(latencies)
        print(f"key → screen while reading: median {lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms ({len(lat)} presses)")
        idle.sort()
        print(f"key → screen after reading (for scale): median {idle[len(idle) // 2] * 1000:.0f} ms, max {idle[-1] * 1000:.0f} ms")
        print(f"RSS MiB while reading: max {max(rss or [0]):.1f}; after: {', '.join(f'{r:.1f}' for r in after)}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
