"""The validation steps, in order of importance: ``--quick`` runs the ones marked ``quick``.

Each step is one process with its own timeout. Tasks of this package run as
``python -m memtop.validation.tasks.NAME STEP_DIR``; other steps are plain commands (pytest, the
advisor benchmark). Timeouts are sized for one H100/H200; the runner also stops starting steps once
the total budget is spent, so a slow machine loses the last steps, not the summary.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from memtop.validation.taskkit import REPO

FULL_BUDGET_S = 450.0  # 7.5 minutes: under 8 with the interpreter's start and the summary
QUICK_BUDGET_S = 170.0  # under 3 minutes


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    argv: tuple[str, ...]
    timeout_s: float
    quick: bool = False
    min_s: float = 15.0  # not started with less budget left than this
    env: tuple[tuple[str, str], ...] = ()  # set for this step's process


def _task(name: str, step_dir: Path, quick: bool) -> tuple[str, ...]:
    argv = [sys.executable, "-m", f"memtop.validation.tasks.{name}", str(step_dir)]
    return tuple(argv + (["--quick"] if quick else []))


def gpu_test_files(repo: Path = REPO) -> list[str]:
    """Test modules that carry the ``gpu`` marker (collecting only these keeps pytest away from
    modules that need textual or hypothesis, which a GPU machine may lack)."""
    marked = re.compile(r"\bpytest\.mark\.gpu\b")
    return sorted(str(p.relative_to(repo)) for p in (repo / "tests").glob("test_*.py") if marked.search(p.read_text(errors="replace")))


def build_plan(outdir: Path, quick: bool, names: list[str] | None = None) -> list[Step]:
    """The steps in order; ``names`` picks some (in --quick mode too, where they then run quick)."""
    def d(name: str) -> Path:
        return outdir / name

    steps = [
        Step("env", "versions, the card, nvidia-smi, and that textual is not needed", _task("env", d("env"), quick), 60, quick=True, min_s=5),
        Step("pytest-gpu", "pytest -m gpu on the test modules with GPU tests", _task("pytest_gpu", d("pytest-gpu"), quick),
             150 if not quick else 100, quick=True),
        Step("samples", "every sample run at GPU scale under memtop train --no-tui --max-steps N; identities on every step record",
             _task("samples", d("samples"), quick), 200 if not quick else 90, quick=True, min_s=30),
        Step("oom", "an OOM under set_per_process_memory_fraction: the oom record, the run's status, memtop analyze on it",
             _task("oom", d("oom"), quick), 90 if not quick else 60, quick=True),
        Step("nvml", "NVML's used bytes vs the allocator's reserved bytes: the CUDA context and other non-PyTorch memory",
             _task("nvml", d("nvml"), quick), 60, quick=True),
        Step("fragmentation", "densifying Gaussian splatting with and without PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
             _task("fragmentation", d("fragmentation"), quick), 120),
        Step("disk-full", "a full disk under memtop train on CUDA: the training is not hung, finished steps are on disk",
             _task("disk_full", d("disk-full"), quick), 90),
        Step("overhead", "hook overhead on GPU steps of about 10, 50 and 200 ms vs bare and vs torch.profiler(profile_memory=True)",
             _task("overhead", d("overhead"), quick), 150, min_s=40),
        Step("advisor", "benchmarks/advisor_validation.py on CUDA (allocator peaks)", _task("advisor", d("advisor"), quick), 180, min_s=40),
        Step("fit", "memtop fit's prediction vs the true boundary found by bisection under a memory cap (if `memtop fit` exists)",
             _task("fit", d("fit"), quick), 150, min_s=40),
    ]
    if names is not None:
        return [s for s in steps if s.name in names]
    return [s for s in steps if s.quick or not quick]


STEP_NAMES = [s.name for s in build_plan(Path("OUTDIR"), quick=False)]
