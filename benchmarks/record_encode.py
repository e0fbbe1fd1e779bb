"""Cost of serializing one step record: full records only (run format v1's writer) against run
format v2's full records + deltas, on the training thread, per record.

Step records of a short profiled run of a small transformer (as under `memtop train`) are
replayed as a run would hand them to the writer: every step new dicts, the same large-tensor
list while it is unchanged, the time, step and resident set size changing every step (a CPU run)
or also the allocator figures (``--cuda``: allocated, reserved, peak, other and fragmentation
change every step). The two encoders run in alternating rounds; the figure is the median over
rounds of (the round's CPU time / records), in microseconds, and the bytes per record.

    python benchmarks/record_encode.py [--rounds 15] [--records 2000] [--cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from record_write import real_step_records  # noqa: E402

from memtop.profiler.step_line import STEP_KEYS  # noqa: E402
from memtop.profiler.writers import RecordEncoder  # noqa: E402


def replay(template: dict[str, Any], n: int, cuda: bool) -> list[dict[str, Any]]:
    out = []
    large = template["large_tensors"]
    for i in range(n):
        rec = copy.deepcopy({k: v for k, v in template.items() if k != "large_tensors"})
        rec["large_tensors"] = large
        rec = {k: rec[k] for k in STEP_KEYS}  # the hook's key order (the file has large_tensors last)
        rec["schema"] = 2
        rec["step"] = 100 + i
        rec["time"] = template["time"] + i * 0.0131
        rec["step_time"] = 0.0131 + (i % 7) * 1e-5
        rec["device_used"] = (template["device_used"] or 0) + 4096 * (i % 13)
        if cuda:
            base = 3 * 2**30 + (i % 17) * 2**20
            rec.update(allocated=base, reserved=base + 2**28, peak=base + 2**27, fragmentation_bytes=2**28, fragmentation_pct=100 * 2**28 / (base + 2**28))
            rec["categories"]["other"] = 2**27
        out.append(rec)
    return out


def replay_again(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [copy.copy(r) for r in records[1:]]


def time_encoder(deltas: bool, records: list[dict[str, Any]]) -> tuple[float, float]:
    enc = RecordEncoder(deltas=deltas)
    enc.encode(records[0])
    t0 = time.thread_time()  # CPU time of this thread: the machine's other load does not count
    for rec in records[1:]:
        enc.encode(rec)
    took = time.thread_time() - t0
    size = sum(len(enc.encode(rec)) for rec in replay_again(records))
    return took / (len(records) - 1), size / (len(records) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--cuda", action="store_true", help="allocator figures change every step too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        template = real_step_records(Path(tmp))[-1]
    timings: dict[bool, list[float]] = {False: [], True: []}
    sizes: dict[bool, float] = {}
    for _ in range(args.rounds):
        for deltas in (False, True):
            records = replay(template, args.records, args.cuda)
            took, sizes[deltas] = time_encoder(deltas, records)
            timings[deltas].append(took)
    for deltas, name in ((False, "full records only (v1 writer)"), (True, "full records + deltas (v2)")):
        print(f"{name:<32} {statistics.median(timings[deltas]) * 1e6:6.1f} us/record  (best {min(timings[deltas]) * 1e6:.1f})  {sizes[deltas]:6.0f} bytes/record")


if __name__ == "__main__":
    main()
