"""Time to first paint of the dashboard (target: within 1 s of launch).

Spawns `python -m memtop watch RUN` in a 160×48 pseudo-terminal, N times, and times from the
spawn to (a) the first frame (the header's "memtop" badge) and (b) the first frame with the run's
figures (its step count). RUN is the recorded fixture run unless --run is given. For scale, the
same harness times a one-label Textual app (interpreter start + Textual's own floor), interleaved
with the dashboard's launches so that both see the same machine load.

    python benchmarks/dashboard_first_paint.py [--repeat 7] [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashboard_pty import REPO, Terminal  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "runs" / "20231114-221320-gaussian_splat"


BASELINE = """
from textual.app import App
from textual.widgets import Static
class Hello(App[None]):
    def compose(self):
        yield Static("baseline-ready")
    def on_key(self):
        self.exit()
Hello().run()
"""


def _cpu(term: Terminal) -> float:
    """CPU seconds the process has used so far (steadier than wall time on a shared machine)."""
    times = psutil.Process(term.proc.pid).cpu_times()
    return float(times.user + times.system)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--run", type=Path, default=FIXTURE)
    parser.add_argument("--data-marker", default="step 60", help="text that shows the run's figures are on screen")
    args = parser.parse_args()
    frames, data, base, cpu, base_cpu = [], [], [], [], []
    for _ in range(args.repeat):
        term = Terminal([sys.executable, "-c", BASELINE])
        try:
            base.append(term.wait_for("baseline-ready", 30))
            base_cpu.append(_cpu(term))
        finally:
            term.close()
        term = Terminal([sys.executable, "-m", "memtop", "watch", str(args.run)])
        try:
            frames.append(term.wait_for("memtop", 30))
            data.append(term.wait_for(args.data_marker, 30))
            cpu.append(_cpu(term))
        finally:
            term.close()
    print(f"machine: {platform.machine()} {platform.processor() or ''} ({platform.python_version()}), {len(frames)} launches")
    print(f"one-label Textual  median {statistics.median(base):.3f} s  (min {min(base):.3f}, max {max(base):.3f})")
    print(f"first frame        median {statistics.median(frames):.3f} s  (min {min(frames):.3f}, max {max(frames):.3f})")
    print(f"first frame w/data median {statistics.median(data):.3f} s  (min {min(data):.3f}, max {max(data):.3f})")
    print(f"CPU time (user+sys) to that frame: dashboard median {statistics.median(cpu):.3f} s, one-label Textual {statistics.median(base_cpu):.3f} s")
    print(f"load average during the measurement: {os.getloadavg()[0]:.2f} (2 cores shared means wall times above are inflated)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
