"""On a CPU the resident set size is read for a step record at most every RSS_INTERVAL seconds and
carried in between (the NVML figure's policy on CUDA): a record's ``device_used`` is at most that old."""

from __future__ import annotations

import os
import time

import torch

from memtop.profiler.backends import CpuBackend


def statm_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_the_rss_is_carried_between_reads_and_read_again_after_the_interval() -> None:
    backend = CpuBackend()
    assert backend.RSS_INTERVAL == 0.05
    first = backend.end_of_step()[2]
    assert first is not None and abs(first - statm_rss()) < 16 << 20
    big = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched: resident
    backend._rss_at = time.monotonic() + 3600  # the last read is "now" for the next hour
    assert backend.end_of_step()[2] == first  # carried
    backend._rss_at = time.monotonic() - backend.RSS_INTERVAL  # the interval has passed
    grown = backend.end_of_step()[2]
    truth = statm_rss()
    assert grown is not None and grown >= first + (60 << 20)
    assert abs(grown - truth) < 16 << 20
    assert backend.end_of_step()[3] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    del big
