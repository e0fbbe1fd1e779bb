"""The device backends' readings that need no GPU: the CPU backend's, and the CUDA backend's
parsing of the allocator's nested statistics (the layout torch documents for
``torch.cuda.memory_stats_as_nested_dict``; tests/test_cuda.py checks it against a real device)."""

from __future__ import annotations

import pytest
import torch

from memtop.profiler.backends import CpuBackend, allocator_figures, raw_stats_reader


def _nested(allocated: int, peak: int, reserved: int, inactive: int | None) -> dict[str, object]:
    def stat(current: int, top: int) -> dict[str, dict[str, int]]:
        one = {"current": current, "peak": top, "allocated": top * 3, "freed": top * 3 - current}
        return {"all": one, "large_pool": dict(one), "small_pool": {"current": 0, "peak": 0, "allocated": 0, "freed": 0}}

    nested: dict[str, object] = {"allocated_bytes": stat(allocated, peak), "reserved_bytes": stat(reserved, reserved), "num_ooms": 0}
    if inactive is not None:
        nested["inactive_split_bytes"] = stat(inactive, inactive)
    return nested


def test_allocator_figures_take_the_all_pool_current_and_peak() -> None:
    assert allocator_figures(_nested(5 << 20, 9 << 20, 16 << 20, 512)) == (5 << 20, 9 << 20, 16 << 20, 512)
    assert allocator_figures(_nested(1, 2, 3, None)) == (1, 2, 3, None)


def test_allocator_figures_refuse_another_layout() -> None:
    with pytest.raises((KeyError, TypeError)):
        allocator_figures({"allocated_bytes.all.current": 1})


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU-only check")
def test_no_fast_path_without_an_initialized_cuda() -> None:
    assert raw_stats_reader(0) is None


def test_cpu_backend_has_no_allocator_figures_and_reads_the_resident_set() -> None:
    backend = CpuBackend()
    peak, state, used, total = backend.end_of_step()
    assert peak is None and state.allocated is None and state.reserved is None
    assert used is None or used > 0
    assert total is None or total > 0
