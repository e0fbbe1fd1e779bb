"""NVML's used bytes against the allocator's reserved bytes, moment by moment in one process: before
CUDA starts, with the context only, after a 1 GiB tensor, after a cuBLAS matmul, after a cuDNN
convolution, after empty_cache. NVML's figure for the process minus ``memory_reserved`` is memory
PyTorch's caching allocator does not manage: the CUDA context (kernel images, runtime heaps), the
cuBLAS/cuDNN handles and their workspaces outside the allocator, NCCL buffers. Then a short
``memtop train`` run shows the same gap in its records (``device_used`` − ``reserved``)."""

from __future__ import annotations

import os
import sys

import torch

from memtop.units import fmt_bytes
from memtop.validation.taskkit import DEVICE, Result, md_table, memtop_train, sample, task_args


class Nvml:
    """This process's used bytes on the card (by pid), else the card's used bytes minus a baseline."""

    def __init__(self) -> None:
        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(_nvml_index())
        self.baseline = int(pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)
        self.by_pid = True

    def used(self) -> int:
        pid = os.getpid()
        for proc in self.nv.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if proc.pid == pid and proc.usedGpuMemory is not None:
                self.by_pid = True
                return int(proc.usedGpuMemory)
        self.by_pid = False
        return int(self.nv.nvmlDeviceGetMemoryInfo(self.handle).used) - self.baseline


def _nvml_index() -> int:
    """NVML numbers cards physically; CUDA_VISIBLE_DEVICES may renumber them for torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    nvml = Nvml()
    rows: list[list[str]] = []
    gaps: dict[str, int] = {}

    def moment(name: str) -> None:
        torch.cuda.synchronize()
        used = nvml.used()
        reserved = torch.cuda.memory_reserved()
        gaps[name] = used - reserved
        rows.append([name, fmt_bytes(used), fmt_bytes(reserved), fmt_bytes(torch.cuda.memory_allocated()), fmt_bytes(used - reserved),
                     "pid" if nvml.by_pid else "card − baseline"])

    rows.append(["before CUDA init", fmt_bytes(nvml.baseline) + " (whole card)", "-", "-", "-", "card"])
    torch.cuda.init()
    x = torch.zeros(1, device="cuda")
    moment("context + 1 element")
    big = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    moment("+ 1 GiB tensor")
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    b = a @ a
    moment("+ cuBLAS bf16 matmul")
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).cuda()
    y = conv(torch.randn(16, 64, 128, 128, device="cuda"))
    moment("+ cuDNN conv2d")
    del big, a, b, y, conv, x
    torch.cuda.empty_cache()
    moment("after del + empty_cache")
    res.note(md_table(["moment", "NVML used", "reserved", "allocated", "NVML − reserved", "NVML figure"], rows))
    for name, gap in gaps.items():
        if gap < 0:
            res.fail(f"{name}: NVML used is {fmt_bytes(-gap)} below reserved")
    if not nvml.by_pid:
        res.note("\n- NVML does not list this process by pid (a container's pid namespace): the figures are the card's used bytes "
                 "minus the baseline before CUDA started, so other processes on the card would count too; memtop's `device_used` "
                 "then falls back to the whole card's used bytes.")
    run = memtop_train(args.step_dir / "runs", "nvml-transformer",
                       [sys.executable, sample("transformer_finetune"), "--n-layers", "6", "--d-model", "512", "--n-heads", "8",
                        "--seq-len", "512", "--batch-size", "8", "--device", DEVICE, "--steps", "50"], max_steps=8, timeout=60)
    f = run.check.figures
    if run.proc.rc != 0 or not run.check.ok:
        res.fail(f"memtop train run: exit {run.proc.rc}; {run.check.summary()}")
    if not f.get("nvml_records"):
        res.fail("no step record has NVML's device_used")
    res.note(f"\nUnder memtop train (transformer, 8 steps): {f.get('nvml_records')} records with NVML figures, median device_used − reserved "
             f"{fmt_bytes(f.get('nvml_minus_reserved_median'))}, against {fmt_bytes(gaps.get('+ cuDNN conv2d'))} measured above after "
             "cuBLAS and cuDNN were loaded.")
    ctx = gaps.get("context + 1 element")
    res.headline = f"context alone {fmt_bytes(ctx)} outside the allocator; with cuBLAS+cuDNN {fmt_bytes(gaps.get('+ cuDNN conv2d'))}; memtop records median {fmt_bytes(f.get('nvml_minus_reserved_median'))}"
    res.figures = {"gaps": gaps, "by_pid": nvml.by_pid, "memtop_run": f}
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
