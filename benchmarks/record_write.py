"""Cost of writing one step record on the training thread (serialize + ``os.write`` to an O_APPEND fd).

Every step record is written before the optimizer step returns, so that a crash loses at most the
step in flight. This measures what that costs per step: real step records, taken from a short
profiled run of the transformer sample (its large-tensor list included, as under `memtop train`),
written again and again through :class:`memtop.profiler.writers.RankFileWriter` into a fresh file.
The figure is the median over rounds of (round time / records), wall and CPU time of the writing
thread, in microseconds, and the wall time as a share of
a 10 ms step (the hook's budget is 1% of that: 100 us for all of its work per step).

    python benchmarks/record_write.py [--rounds 15] [--records 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import memtop  # noqa: E402
from memtop.profiler.step_line import STEP_KEYS  # noqa: E402
from memtop.profiler.writers import RankFileWriter  # noqa: E402
from memtop.runs.reader import StepRecord, read_file  # noqa: E402


def real_step_records(tmp: Path) -> list[dict[str, Any]]:
    """Step records of a short profiled run of a small transformer (AdamW, 2 blocks)."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    os.environ["MEMTOP_TENSORBOARD"] = "0"
    with memtop.profile(model, opt, runs_dir=tmp) as prof:
        for _ in range(4):
            model(torch.randn(4, 32, 256)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        run_dir = prof.run_dir
    recs, _, _ = read_file(run_dir / "rank0.jsonl")  # step deltas rebuilt (run format v2)
    out = []
    for r in recs:
        if isinstance(r, StepRecord):
            doc = json.loads(json.dumps(dict(r.doc)))
            # the hook's key order (the file puts a non-empty large-tensor list last), so that the
            # records take the writer's fast path as they do in a run
            out.append({**{k: doc.pop(k) for k in STEP_KEYS if k in doc}, **doc})
    return out


def time_writes(records: list[dict[str, Any]], tmp: Path, n: int, rounds: int) -> tuple[float, float, float, float]:
    """Median wall and CPU seconds per record written, the best round's CPU seconds, and the file's bytes per record."""
    per_record: list[float] = []
    cpu_per_record: list[float] = []
    size = 0.0
    for i in range(rounds):
        out = tmp / f"bench{i}"
        writer = RankFileWriter(out, rank=0)
        writer.put(dict(records[0]))  # the file is claimed at the first record: not timed
        batch = [dict(records[-1]) for _ in range(n)]
        t0, c0 = time.perf_counter(), time.thread_time()
        for rec in batch:
            writer.put(rec)
        per_record.append((time.perf_counter() - t0) / n)
        cpu_per_record.append((time.thread_time() - c0) / n)
        writer.close()
        assert writer.path is not None
        size = writer.path.stat().st_size / (n + 1)
    return statistics.median(per_record), statistics.median(cpu_per_record), min(cpu_per_record), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--records", type=int, default=500)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        records = real_step_records(tmp / "runs")
        full, full_cpu, full_best, full_size = time_writes(records, tmp, args.records, args.rounds)
        small = [{k: v for k, v in r.items() if k != "large_tensors"} for r in records]
        bare, bare_cpu, bare_best, bare_size = time_writes(small, tmp, args.records, args.rounds)
    figures = {
        "record_bytes": round(full_size),
        "us_per_record": round(full * 1e6, 1),
        "cpu_us_per_record": round(full_cpu * 1e6, 1),
        "best_round_cpu_us_per_record": round(full_best * 1e6, 1),
        "share_of_10ms_step_pct": round(100 * full / 0.010, 3),
        "record_bytes_without_large_tensors": round(bare_size),
        "us_per_record_without_large_tensors": round(bare * 1e6, 1),
        "cpu_us_per_record_without_large_tensors": round(bare_cpu * 1e6, 1),
        "best_round_cpu_us_per_record_without_large_tensors": round(bare_best * 1e6, 1),
    }
    print(
        f"step record of {figures['record_bytes']} B (its large-tensor list serialized once and reused): "
        f"{figures['us_per_record']} us per record (CPU {figures['cpu_us_per_record']} us, best round {figures['best_round_cpu_us_per_record']} us)"
        f" = {figures['share_of_10ms_step_pct']}% of a 10 ms step\n"
        f"without the large-tensor list ({figures['record_bytes_without_large_tensors']} B): "
        f"{figures['us_per_record_without_large_tensors']} us per record (CPU {figures['cpu_us_per_record_without_large_tensors']} us,"
        f" best round {figures['best_round_cpu_us_per_record_without_large_tensors']} us)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
