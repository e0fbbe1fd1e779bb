"""The dashboard's own cost while a run streams in (target: ≤ 5% of one core at the default refresh).

A writer process appends step records to a live run at --rate records per second (default 50; each
record shaped like the hook's CUDA output, 16 large tensors, ~2.5 KB) and a line of output every
0.2 s. `python -m memtop watch RUN` (default refresh, 0.5 s) runs in a 160×48 pseudo-terminal
whose output is drained as a terminal would. After a warm-up, the dashboard process's CPU time
(user + system, all its threads) over --seconds is reported as a share of one core, and its
resident memory is sampled every 5 s (it must stay flat: the history is decimated, the record
window bounded).

    python benchmarks/dashboard_cpu.py [--seconds 60] [--rate 50] [--warmup 5]
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
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dashboard_pty import Terminal  # noqa: E402

WRITER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
sys.path.insert(0, sys.argv[5])
from runfactory import step_record, GiB, MiB
from memtop.profiler.writers import RecordEncoder
from memtop.profiler.step_line import STEP_KEYS
run, rate, fmt = sys.argv[1], float(sys.argv[2]), sys.argv[4]
encoder = RecordEncoder(deltas=fmt == "v2")  # v1: every step line full
tensors = [{"name": f"model.layers.{i}.mlp.weight", "category": "parameters", "bytes": (64 - i) * MiB,
            "shape": [4096, 4096 - i], "dtype": "torch.bfloat16"} for i in range(16)]
step, t0 = 0, time.time()
with open(run + "/rank0.jsonl", "a") as fh, open(run + "/output.log", "a") as log:
    while True:
        step += 1
        rec = step_record(step, t0=t0 - step * 0.02, step_time=1.0 / rate,
                          activations=(6 + (step % 50) / 100) * GiB, fragmentation=(300 + step % 97) * MiB)
        rec["time"] = time.time()
        rec["large_tensors"] = tensors
        rec["schema"] = 2 if fmt == "v2" else 1
        cats = rec["categories"]
        moment = {"allocated": rec["allocated"], "parameters": cats["parameters"], "gradients": cats["gradients"],
                  "optimizer_state": cats["optimizer_state"], "activations": cats["activations"]}
        rec.update(measured_step=rec["activations_step"], moments={"forward_end": moment, "optimizer_step": dict(moment, activations=0)},
                   highwater={k: cats[k] for k in ("parameters", "gradients", "optimizer_state", "activations")})
        rec = {k: rec[k] for k in STEP_KEYS}  # the hook's key order: the writer's fast path
        fh.write(encoder.encode(rec).decode())
        fh.flush()
        if step % max(1, int(rate / 5)) == 0:
            log.write(f"step {step} loss {1.0 / step:.5f}\n")
            log.flush()
        next_at = t0 + step / rate
        delay = next_at - time.time()
        if delay > 0:
            time.sleep(delay)
"""


def make_live_run(root: Path, writer_pid: int) -> Path:
    from memtop.runs.rundir import write_meta

    run = root / "20261122-120000-live"
    run.mkdir(parents=True)
    write_meta(
        run,
        {
            "schema": 1, "run_id": run.name, "command": ["python", "train.py", "--batch-size", "32"],
            "cwd": str(root), "started_at": time.time(), "ended_at": None, "exit_code": None, "status": "running",
            "host": platform.node(), "pid": writer_pid,
            "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "total_bytes": 80 * 2**30, "kind": "cuda"}],
            "detected_flags": [],
        },
    )
    (run / "rank0.jsonl").touch()
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0, help="step records per second")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--refresh", type=float, default=None, help="pass --refresh to memtop watch (default: its default)")
    parser.add_argument("--format", choices=("v1", "v2"), default="v2", help="run format the writer writes (v2: full records and deltas, as the hook)")
    args = parser.parse_args()
    tests_dir = str(Path(__file__).resolve().parent.parent / "tests")
    with tempfile.TemporaryDirectory() as tmp:
        run = make_live_run(Path(tmp), os.getpid())
        repo = str(Path(__file__).resolve().parent.parent)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run), str(args.rate), tests_dir, args.format, repo])
        argv = [sys.executable, "-m", "memtop", "watch", str(run)]
        if args.refresh is not None:
            argv += ["--refresh", str(args.refresh)]
        term = Terminal(argv)
        try:
            term.wait_for("RUNNING", 30)
            time.sleep(args.warmup)
            proc = psutil.Process(term.proc.pid)
            lines_before = sum(1 for _ in open(run / "rank0.jsonl", "rb"))
            c0, w0 = proc.cpu_times(), time.perf_counter()
            rss = [proc.memory_info().rss]
            while time.perf_counter() - w0 < args.seconds:
                time.sleep(min(5.0, args.seconds - (time.perf_counter() - w0)))
                rss.append(proc.memory_info().rss)
            c1, w1 = proc.cpu_times(), time.perf_counter()
            lines_after = sum(1 for _ in open(run / "rank0.jsonl", "rb"))
        finally:
            term.close()
            writer.kill()
            writer.wait()
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    wall = w1 - w0
    rate = (lines_after - lines_before) / wall
    mib = [r / 2**20 for r in rss]
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    print(f"writer: run format {args.format}, {rate:.1f} step records/s over {wall:.0f} s (records {json.dumps([lines_before, lines_after])})")
    print(f"dashboard CPU: {100 * cpu / wall:.2f}% of one core ({cpu:.2f} s CPU in {wall:.0f} s)")
    print(f"dashboard RSS MiB: start {mib[0]:.1f}, end {mib[-1]:.1f}, max {max(mib):.1f}, samples {[round(m, 1) for m in mib]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
