"""Fuzz the read-only verbs with ≥10,000 mutated real runs (the suite runs a few hundred).

Each case mutates a copy of a recorded run (tests/runfuzz.py: truncate, flip bytes, drop keys,
change types, huge/negative/NaN numbers, 1e309, deep nesting, long strings, a 5,000-character
cwd, garbage lines, odd meta.json) and runs ``analyze``, ``compare --json`` and ``export --csv``
in process. Reports tracebacks, hangs (no answer within 30 s), exits other than 0, or 1/2 with one
line, the slowest call and the peak resident memory (the process runs under an address-space limit,
so unbounded reading would fail as MemoryError, which counts as a problem).

    python benchmarks/fuzz_runs.py [--cases 10000] [--seed 1] [--limit-gib 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from runfuzz import Tally, run_cases  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit-gib", type=float, default=4.0, help="address-space limit of this process")
    args = ap.parse_args()
    limit = int(args.limit_gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ["MEMTOP_NO_FLAG_DETECTION"] = "1"
    for k in ("MEMTOP_RUNS_DIR", "MEMTOP_RUN_DIR"):
        os.environ.pop(k, None)
    t0 = time.perf_counter()
    cpu0 = time.process_time()

    def progress(t: Tally) -> None:
        if t.cases % 500 == 0:
            print(f"  {t.cases} cases, {t.calls} calls, {len(t.problems)} problems, {time.perf_counter() - t0:.0f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="memtop-fuzz-") as tmp:
        tally = run_cases(Path(tmp), args.cases, seed=args.seed, progress=progress)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"cases {tally.cases}, verb calls {tally.calls}, seed {args.seed}")
    print(f"problems (tracebacks, hangs, bad exits): {len(tally.problems)}")
    print(f"wall {wall:.0f} s, CPU {time.process_time() - cpu0:.0f} s, slowest call {tally.slowest:.2f} s ({tally.slowest_case}), peak RSS {rss:.0f} MiB (limit {args.limit_gib:g} GiB)")
    print("exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.codes.items())))
    print("mutations: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.mutations.items(), key=lambda kv: -kv[1])))
    for p in tally.problems[:10]:
        print("\n" + p)
    return 1 if tally.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
