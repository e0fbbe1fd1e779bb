"""`memtop train --device-memory SIZE`: refused without CUDA (one line, exit 2), passed to the hook,
and on a GPU a real cap: an allocation over it runs out of memory while the card has room."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memtop.profiler import device_cap

REPO = Path(__file__).resolve().parent.parent
TINY = str(Path(__file__).resolve().parent / "scripts" / "tiny_train.py")


def memtop(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTOP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return subprocess.run([sys.executable, "-m", "memtop", *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refused_without_cuda_one_line_exit_2(tmp_path: Path) -> None:
    proc = memtop("train", "--no-tui", "--device-memory", "8GB", "--runs-dir", str(tmp_path), "--", sys.executable, TINY)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "memtop: --device-memory caps CUDA memory, and this machine has no CUDA device"
    assert not any(tmp_path.iterdir()), "no run directory is made for a refused command"


def test_bad_size_one_line_exit_2(tmp_path: Path) -> None:
    proc = memtop("train", "--no-tui", "--device-memory", "lots", "--runs-dir", str(tmp_path), "--", sys.executable, TINY)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a memory size" in lines[0]


def test_hook_side_without_cuda_is_a_no_op_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(device_cap.ENV_DEVICE_MEMORY, raising=False)
    assert device_cap.apply_from_env(torch) is None
    monkeypatch.setenv(device_cap.ENV_DEVICE_MEMORY, "junk")
    assert device_cap.requested_cap() is None
    if torch.cuda.is_available():
        return
    monkeypatch.setenv(device_cap.ENV_DEVICE_MEMORY, str(1 << 30))
    assert device_cap.apply_from_env(torch) is None
    assert "no CUDA device" in capsys.readouterr().err


_ALLOC = """
import torch
from torch import nn
model = nn.Linear(64, 64).cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(2):
    model(torch.randn(8, 64, device="cuda")).sum().backward()
    opt.step(); opt.zero_grad()
x = torch.empty(int(__import__("sys").argv[1]), dtype=torch.uint8, device="cuda")
print("allocated", x.numel(), flush=True)
"""


@pytest.mark.gpu
def test_cap_makes_an_allocation_over_it_run_out_of_memory(tmp_path: Path) -> None:
    script = tmp_path / "alloc.py"
    script.write_text(_ALLOC)
    free, _ = torch.cuda.mem_get_info()
    want = 2 << 30
    if free < 2 * want:
        pytest.skip("needs 4 GiB free on the card")
    capped = memtop("train", "--no-tui", "--device-memory", "1GB", "--runs-dir", str(tmp_path / "capped"), "--", sys.executable, str(script), str(want))
    assert capped.returncode != 0, capped.stdout
    run = next((tmp_path / "capped").iterdir())
    meta = json.loads((run / "meta.json").read_text())
    assert meta["device_memory"] == 1 << 30 and meta["status"] == "oom"
    free_run = memtop("train", "--no-tui", "--runs-dir", str(tmp_path / "free"), "--", sys.executable, str(script), str(want))
    assert free_run.returncode == 0 and "allocated" in free_run.stdout
