"""Device backends: what the allocator and the device can tell about memory.

CUDA has allocator counters (torch.cuda) and the driver's view (NVML); the CPU has neither, so
its allocator figures are None and its "device" figures are the process's resident set size and
the machine's physical memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

try:
    _PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError, AttributeError):
    _PAGE_SIZE = 4096


@dataclass(frozen=True)
class AllocatorState:
    allocated: int | None
    reserved: int | None
    inactive_split: int | None


class Backend(Protocol):
    device: torch.device

    def allocated(self) -> int | None: ...

    def state(self) -> AllocatorState: ...

    def take_peak(self) -> int | None:
        """The allocator's peak since the last call, then reset it."""
        ...

    def carry_peak(self, value: int) -> None:
        """Remember a peak read mid-step (a stage had to reset the counter) for the next take_peak."""
        ...

    def device_usage(self) -> tuple[int | None, int | None]:
        """(used by this process, total) of the device."""
        ...

    def step_end_allocated(self) -> int | None:
        """:meth:`allocated` at a step's last moment (after its optimizer step, ``prof.step()`` or
        last backward pass): :meth:`end_of_step`, which follows in the same callback with nothing
        allocated in between, reuses the read."""
        ...

    def end_of_step(self) -> tuple[int | None, AllocatorState, int | None, int | None]:
        """What a step record reads, in one call: (``take_peak()``, ``state()``, *``device_usage()``)."""
        ...


_statm: list[int] = []  # the fd of this process's /proc/self/statm, opened once: a pread is far cheaper than open+read+close


def _forget_statm() -> None:
    """A forked child must not read its parent's file (the inherited fd names the parent's /proc entry)."""
    _statm.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_statm)


def _rss_bytes() -> int | None:
    try:
        if not _statm:
            _statm.append(os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
        return int(os.pread(_statm[0], 128, 0).split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform: figure unknown
        return None


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def rss_bytes() -> int | None:
    return _rss_bytes()


def peak_rss_bytes() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


_NO_ALLOCATOR = AllocatorState(None, None, None)


class CpuBackend:
    """No allocator counters; the process's resident set size (one ``pread`` of /proc, 13-20 us
    on a training thread whose caches the step evicts), read for a step record at most every
    :data:`RSS_INTERVAL` seconds and carried in between, as NVML's figure is on CUDA: at steps
    shorter than that, a record's ``device_used`` is the value read up to that long before it.
    It is the only figure that shows a CPU run's memory outside the tracked tensors; leak
    detection looks at its trend over many steps, which a 50 ms old value does not change."""

    RSS_INTERVAL = 0.05

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self._total = _physical_memory()
        self._rss_at = -1.0  # time.monotonic() of the last read for a step record
        self._rss: int | None = None

    def allocated(self) -> int | None:
        return None

    def step_end_allocated(self) -> int | None:
        return None

    def state(self) -> AllocatorState:
        return _NO_ALLOCATOR

    def take_peak(self) -> int | None:
        return None

    def carry_peak(self, value: int) -> None:
        return None

    def device_usage(self) -> tuple[int | None, int | None]:
        return _rss_bytes(), self._total

    def end_of_step(self) -> tuple[int | None, AllocatorState, int | None, int | None]:
        now = time.monotonic()
        if now - self._rss_at >= self.RSS_INTERVAL:
            self._rss_at = now
            self._rss = _rss_bytes()
        return None, _NO_ALLOCATOR, self._rss, self._total


RawStats = Callable[[int], dict[str, Any]]


def allocator_figures(nested: dict[str, Any]) -> tuple[int, int, int, int | None]:
    """(allocated, peak, reserved, inactive split bytes) from the CUDA caching allocator's nested
    statistics (``torch.cuda.memory_stats_as_nested_dict``: ``allocated_bytes.all.current`` is
    ``nested["allocated_bytes"]["all"]["current"]``). KeyError/TypeError where the layout differs."""
    allocated, reserved = nested["allocated_bytes"]["all"], nested["reserved_bytes"]["all"]
    inactive = nested.get("inactive_split_bytes")
    split = int(inactive["all"]["current"]) if inactive is not None else None
    return int(allocated["current"]), int(allocated["peak"]), int(reserved["current"]), split


def raw_stats_reader(index: int) -> RawStats | None:
    """``torch._C._cuda_memoryStats``, where it answers as the public API does on this device.

    ``torch.cuda.memory_allocated``, ``max_memory_allocated`` and ``memory_reserved`` each call
    ``torch.cuda.memory_stats``, which flattens the allocator's ~130 nested figures into sorted
    dotted keys in Python: ~90 µs a call on a CPU core (docs/performance.md), and a step record
    read six of them. The nested statistics it flattens come from one C++ call; memtop reads them
    there, after checking once that they give the public API's figures (a torch whose private
    call is missing or differs gets the public one)."""
    raw: RawStats | None = getattr(torch._C, "_cuda_memoryStats", None)
    if raw is None or not torch.cuda.is_initialized():
        return None
    try:
        allocated, peak, reserved, _ = allocator_figures(raw(index))
        stats = torch.cuda.memory_stats(index)
        public = (stats.get("allocated_bytes.all.current"), stats.get("allocated_bytes.all.peak"), stats.get("reserved_bytes.all.current"))
        if public != (allocated, peak, reserved):
            return None  # (another thread allocating between the two reads costs the fast path only)
    except Exception:  # noqa: BLE001 - another torch: the public API
        return None
    return raw


class CudaBackend:
    """torch.cuda counters for one device, plus NVML (sampled at most once a second)."""

    NVML_INTERVAL = 1.0

    def __init__(self, device: torch.device) -> None:
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.device = torch.device("cuda", index)
        self.index = index
        self._nvml = NvmlProbe(index)
        self._nvml_at = 0.0
        self._nvml_value: tuple[int | None, int | None] = (None, None)
        self._carried = 0
        self._raw = raw_stats_reader(index)
        self._step_end_read: tuple[int, int, int, int | None] | None = None  # step_end_allocated's, for end_of_step

    def _figures(self) -> tuple[int, int, int, int | None]:
        """(allocated, peak since the last reset, reserved, inactive split bytes), read at once."""
        self._step_end_read = None  # (any other read: end_of_step reads anew)
        raw = self._raw
        if raw is not None:
            return allocator_figures(raw(self.index))
        stats = torch.cuda.memory_stats(self.index)  # (one flattening for all four)
        inactive = stats.get("inactive_split_bytes.all.current")
        return (
            int(stats.get("allocated_bytes.all.current", 0)),
            int(stats.get("allocated_bytes.all.peak", 0)),
            int(stats.get("reserved_bytes.all.current", 0)),
            int(inactive) if inactive is not None else None,
        )

    def allocated(self) -> int | None:
        self._step_end_read = None
        raw = self._raw
        if raw is not None:
            return int(raw(self.index)["allocated_bytes"]["all"]["current"])
        return int(torch.cuda.memory_allocated(self.index))

    def step_end_allocated(self) -> int | None:
        figures = self._figures()
        self._step_end_read = figures
        return figures[0]

    def state(self) -> AllocatorState:
        allocated, _, reserved, inactive = self._figures()
        return AllocatorState(allocated, reserved, inactive)

    def take_peak(self) -> int | None:
        peak = max(self._figures()[1], self._carried)
        self._reset_peak()
        return peak

    def _reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.index)
        self._carried = 0

    def carry_peak(self, value: int) -> None:
        self._carried = max(self._carried, value)

    def device_usage(self) -> tuple[int | None, int | None]:
        now = time.monotonic()
        if now - self._nvml_at >= self.NVML_INTERVAL:
            self._nvml_at = now
            self._nvml_value = self._nvml.usage()
        return self._nvml_value

    def end_of_step(self) -> tuple[int | None, AllocatorState, int | None, int | None]:
        figures = self._step_end_read  # (the step's last moment was read just before: one read a step less)
        allocated, peak, reserved, inactive = figures if figures is not None else self._figures()  # (the peak and the state of one moment)
        self._step_end_read = None
        peak = max(peak, self._carried)
        self._reset_peak()
        used, total = self.device_usage()
        return peak, AllocatorState(allocated, reserved, inactive), used, total


class NvmlProbe:
    """This process's used bytes and the card's total, through NVML (nvidia-ml-py).

    The card is found by UUID, so CUDA_VISIBLE_DEVICES reordering is respected. When the process
    is not listed (a container's PID namespace), the card's used bytes are reported instead.
    """

    def __init__(self, torch_index: int) -> None:
        self._handle: object | None = None
        self.scope = "process"
        try:
            import pynvml

            pynvml.nvmlInit()
            uuid = str(torch.cuda.get_device_properties(torch_index).uuid)
            try:
                self._handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
            except pynvml.NVMLError:
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(torch_index)
        except Exception:  # noqa: BLE001 - no NVML (driver, library or permissions): figures unknown
            self._handle = None

    def usage(self) -> tuple[int | None, int | None]:
        if self._handle is None:
            return None, None
        try:
            import pynvml

            total = int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).total)
            pid = os.getpid()
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    self.scope = "process"
                    return int(proc.usedGpuMemory), total
            self.scope = "device"
            return int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used), total
        except Exception:  # noqa: BLE001 - NVML query failed: figures unknown
            return None, None


def backend_for(device: torch.device) -> Backend:
    if device.type == "cuda" and torch.cuda.is_available():
        return CudaBackend(device)
    return CpuBackend()
