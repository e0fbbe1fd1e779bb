"""CUDA backend: the allocator identities, NVML figures and the OOM observer (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SCRIPTS, only_run, read_records, run_memtop
from torch import nn

import memtop

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("fresh_hooks")]


def _train(tmp_path: Path, steps: int = 4) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        for _ in range(steps):
            x = torch.randn(256, 1024, device="cuda")
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return [r for r in read_records(prof.run_dir) if r["type"] == "step"]


def test_cuda_identities_hold(tmp_path: Path) -> None:
    steps = _train(tmp_path)
    for rec in steps:
        cats = rec["categories"]
        assert rec["device"].startswith("cuda")
        assert sum(cats.values()) == rec["peak"]
        assert rec["allocated"] + rec["fragmentation_bytes"] == rec["reserved"]
        assert 0 <= rec["fragmentation_pct"] <= 100
        assert rec["inactive_split_bytes"] is not None
        assert rec["peak"] >= rec["allocated"]


def test_cuda_parameters_exact_and_nvml_present(tmp_path: Path) -> None:
    steps = _train(tmp_path)
    expected = (1024 * 4096 + 4096 + 4096 * 1024 + 1024) * 4
    for rec in steps:
        assert rec["moments"]["optimizer_step"]["parameters"] == expected
        assert rec["moments"]["optimizer_step"]["gradients"] == expected
    # NVML is sampled at most once a second: at least the first record has it
    assert steps[0]["device_total"] == torch.cuda.get_device_properties(0).total_memory or steps[0]["device_total"] > 0
    assert steps[0]["device_used"] is not None and steps[0]["device_used"] >= steps[0]["reserved"]


def test_cuda_oom_record_is_written_before_the_exception(tmp_path: Path) -> None:
    model = nn.Linear(256, 256).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(torch.OutOfMemoryError):
        with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
            model(torch.randn(8, 256, device="cuda")).sum().backward()
            opt.step()
            torch.empty(total * 2, dtype=torch.uint8, device="cuda")
    oom = [r for r in read_records(prof.run_dir) if r["type"] == "oom"]
    assert len(oom) == 1
    assert oom[0]["requested_bytes"] >= total * 2  # the allocator's own figure (rounded up to its block size)
    assert oom[0]["categories"]["parameters"] == (256 * 256 + 256) * 4
    assert oom[0]["allocated"] is not None


def test_cuda_zero_code_sample_run(tmp_path: Path) -> None:
    script = str(SCRIPTS.parent.parent / "sample_runs" / "transformer_finetune.py")
    out = run_memtop("train", "--no-tui", "--runs-dir", str(tmp_path), "--max-steps", "5", script, "--device", "cuda", "--steps", "20")
    assert out.returncode == 0, out.stderr
    steps = [r for r in read_records(only_run(tmp_path)) if r["type"] == "step"]
    assert len(steps) == 5
    assert all(r["device"].startswith("cuda") and sum(r["categories"].values()) == r["peak"] for r in steps)


def test_cuda_backend_reads_the_public_apis_figures_in_one_call() -> None:
    """The backend reads the allocator's nested statistics once (memtop.profiler.backends.raw_stats_reader),
    not the flattened ``torch.cuda.memory_stats`` up to six times a step: on this torch the fast
    path must be taken and give exactly what the public API says, peak and reset included."""
    from memtop.profiler.backends import CudaBackend

    keep = [torch.empty(3 << 20, dtype=torch.uint8, device="cuda")]
    backend = CudaBackend(torch.device("cuda", 0))
    assert backend._raw is not None, "torch._C._cuda_memoryStats missing or disagreeing: every read takes the slow public API"
    assert backend.allocated() == torch.cuda.memory_allocated(0)
    torch.cuda.reset_peak_memory_stats(0)
    transient = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
    del transient
    expected_peak = torch.cuda.max_memory_allocated(0)
    peak, state, _, total = backend.end_of_step()
    assert peak == expected_peak >= torch.cuda.memory_allocated(0) + (64 << 20)
    assert state.allocated == torch.cuda.memory_allocated(0)
    assert state.reserved == torch.cuda.memory_reserved(0)
    assert state.inactive_split == torch.cuda.memory_stats(0).get("inactive_split_bytes.all.current")
    assert torch.cuda.max_memory_allocated(0) == torch.cuda.memory_allocated(0)  # reset at the step's end
    assert total is None or total > 0
    del keep


def test_cuda_step_end_reuses_the_last_moments_read() -> None:
    """The step's last moment reads the allocator; the step's end, next in the same callback,
    reuses that read (one read a step less), and any other read in between makes it read anew."""
    from memtop.profiler.backends import CudaBackend

    backend = CudaBackend(torch.device("cuda", 0))
    raw = backend._raw
    assert raw is not None
    calls = [0]

    def counted(index: int) -> dict[str, Any]:
        calls[0] += 1
        return raw(index)

    backend._raw = counted
    keep = torch.empty(1 << 20, dtype=torch.uint8, device="cuda")
    allocated = backend.step_end_allocated()
    peak, state, _, _ = backend.end_of_step()
    assert calls[0] == 1 and state.allocated == allocated == torch.cuda.memory_allocated(0)
    assert peak is not None and peak >= allocated
    backend.step_end_allocated()
    more = torch.empty(2 << 20, dtype=torch.uint8, device="cuda")
    backend.allocated()  # another read in between: the step's end reads anew
    _, state, _, _ = backend.end_of_step()
    assert calls[0] == 4 and state.allocated == torch.cuda.memory_allocated(0)
    del keep, more


def test_cuda_steady_steps_repeat_the_last_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors of the same shapes every step: the allocator holds the same bytes at each moment,
    so the steps between measured ones repeat the last record (memtop.profiler.steady), with and
    without gradient accumulation; every record still satisfies the identities."""
    from hookkit import count_repeats

    repeats = count_repeats(monkeypatch)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(64, 512, device="cuda")
    with memtop.profile(model, opt, runs_dir=tmp_path) as prof:
        for step in range(60):
            for _ in range(2 if step >= 30 else 1):
                model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    steps = [r for r in read_records(prof.run_dir) if r["type"] == "step"]
    assert len(steps) == 60
    assert repeats[0] >= 20, repeats[0]
    for rec in steps:
        assert sum(rec["categories"].values()) == rec["peak"]
        assert rec["allocated"] + rec["fragmentation_bytes"] == rec["reserved"]
