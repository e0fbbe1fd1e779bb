"""A crash of the training process loses at most the step in flight (issue 7, item 7).

Each record is ``os.write()``n to an ``O_APPEND`` file before the optimizer step returns, so the
kernel has it when the process dies of SIGSEGV, SIGKILL or the OOM killer (SIGKILL too).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hookkit import read_lines, record_files, run_hooked, steps_of

from memtop.launcher import child_environment
from memtop.profiler.writers import RankFileWriter

KILL_SELF = """
import os, signal, sys
import torch

torch.manual_seed(0)
device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).to(device)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
sig = getattr(signal, sys.argv[1])
x = torch.randn(16, 32, device=device)
for step in range(1, 100):
    model(x).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    if step == 40:
        os.kill(os.getpid(), sig)
"""


@pytest.mark.parametrize("journal", [True, False], ids=["memtop-train", "standalone"])
@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGKILL"])
def test_every_finished_step_survives_a_crash(tmp_path: Path, sig: str, journal: bool) -> None:
    run_dir = tmp_path / "run"
    proc = run_hooked(KILL_SELF, tmp_path / "proj", run_dir, sig, journal=journal)
    assert proc.returncode == -getattr(signal, sig), proc.stderr
    assert record_files(run_dir) == ["rank0.jsonl"]
    records = read_lines(run_dir / "rank0.jsonl")  # every line complete, valid JSON
    assert steps_of(records) == list(range(1, 41))
    assert all(r["rank"] == 0 and r["schema"] == 2 for r in records)


@pytest.mark.gpu
@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGKILL"])
def test_every_finished_step_survives_a_crash_on_cuda(tmp_path: Path, sig: str) -> None:
    run_dir = tmp_path / "run"
    proc = run_hooked(KILL_SELF, tmp_path / "proj", run_dir, sig, "cuda")
    assert proc.returncode == -getattr(signal, sig), proc.stderr
    records = read_lines(run_dir / "rank0.jsonl")
    assert steps_of(records) == list(range(1, 41))
    assert {r["device"] for r in records} == {"cuda:0"}
    assert all(isinstance(r["peak"], int) and r["peak"] > 0 for r in records)


EXTERNAL = """
import torch

model = torch.nn.Linear(64, 64)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
step = 0
while True:
    model(torch.randn(8, 64)).sum().backward()
    opt.step()
    opt.zero_grad()
    step += 1
    print(f"done {step}", flush=True)
"""


def test_sigkill_from_outside_keeps_every_step_the_script_saw_finish(tmp_path: Path) -> None:
    """The OOM killer's way: SIGKILL at a moment of its choosing, here right after step 8 returned."""
    run_dir = tmp_path / "run"
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text(EXTERNAL)
    env = child_environment(run_dir, None)
    child = subprocess.Popen([sys.executable, "train.py"], cwd=project, env=env, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "done 8":
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(timeout=60)
    records = read_lines(run_dir / "rank0.jsonl")
    steps = steps_of(records)
    assert steps[:8] == list(range(1, 9))
    assert steps == list(range(1, len(steps) + 1))  # nothing lost in between, nothing torn


def test_a_record_is_in_the_file_when_write_returns(tmp_path: Path) -> None:
    """No user-space buffer: another reader sees the record at once, before any close or flush."""
    writer = RankFileWriter(tmp_path, rank=0)
    writer.put({"type": "step", "schema": 1, "step": 1, "large_tensors": [{"name": "w", "bytes": 4}]})
    writer.put({"type": "step", "schema": 1, "step": 2, "large_tensors": [{"name": "w", "bytes": 4}]})
    records = read_lines(tmp_path / "rank0.jsonl")
    assert steps_of(records) == [1, 2]
    assert records[1]["large_tensors"] == [{"name": "w", "bytes": 4}]
    assert records[0]["rank"] == 0
    writer.close()


DISK_FULL = """
import json, resource, signal, sys
from pathlib import Path
from memtop.profiler.writers import RankFileWriter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG, as on a full disk
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
writer = RankFileWriter(Path(sys.argv[1]), rank=0)
pad = "x" * 300
writer.put({"type": "step", "step": 1, "pad": pad})
size = Path(sys.argv[1], "rank0.jsonl").stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # room for a third of the next record
writer.put({"type": "step", "step": 2, "pad": pad})
writer.put({"type": "step", "step": 3, "pad": pad})
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
writer.put({"type": "step", "step": 4, "pad": pad})
writer.write_now({"type": "exit", "steps": 4})
print(writer.failed_writes)
"""


def test_a_full_disk_costs_the_records_it_refused_and_nothing_after(tmp_path: Path) -> None:
    """A write cut short by a full disk leaves half a line; the next record starts a fresh one."""
    proc = subprocess.run([sys.executable, "-c", DISK_FULL, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"
    lines = (tmp_path / "rank0.jsonl").read_text().splitlines()
    assert len(lines) == 4 and lines[1].startswith('{"type":"step","step":2')  # the torn one
    whole = [json.loads(line) for i, line in enumerate(lines) if i != 1]
    assert [r.get("step") for r in whole] == [1, 4, None]
