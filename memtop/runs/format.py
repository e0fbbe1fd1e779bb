"""Names and shapes of run format v2 (see docs/run-format.md; v1 runs read as they are).

This module holds the format's names (files, environment variables, TensorBoard tags); the
record keys and their types are spelled once, in :mod:`memtop.runs.records`, and validated once,
in :mod:`memtop.runs.decode`.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 2  # 2: step deltas (docs/run-format.md); schema-1 records read unchanged

CATEGORIES: Final = ("parameters", "gradients", "optimizer_state", "activations", "other")

RECORD_TYPES: Final = ("step", "stage", "oom", "warning", "exit")

# The moments a step record's ``peak_point`` names (docs/run-format.md).
PEAK_POINTS: Final = ("forward_end", "optimizer_step", "manual_step", "backward_end")
HIGHWATER_CATEGORIES: Final = CATEGORIES[:4]

META_FILE: Final = "meta.json"
OUTPUT_LOG: Final = "output.log"
TENSORBOARD_DIR: Final = "tensorboard"
RANK_FILE_PREFIX: Final = "rank"
RANK_FILE_SUFFIX: Final = ".jsonl"
STEP_INDEX_SUFFIX: Final = ".idx"  # rank<N>.jsonl.idx: the hook's step index of a long record file (not a record file)
PROC_FILE_PREFIX: Final = "proc"  # proc<pid>.jsonl: a process of the run without a rank of its own

# Environment variables through which `memtop train` configures the hook in the child.
ENV_RUN_DIR: Final = "MEMTOP_RUN_DIR"
ENV_RUNS_DIR: Final = "MEMTOP_RUNS_DIR"
ENV_MAX_STEPS: Final = "MEMTOP_MAX_STEPS"
ENV_LARGE_TENSOR_BYTES: Final = "MEMTOP_LARGE_TENSOR_BYTES"
ENV_ACTIVATIONS: Final = "MEMTOP_ACTIVATIONS"
ENV_TENSORBOARD: Final = "MEMTOP_TENSORBOARD"
ENV_DISABLE: Final = "MEMTOP_DISABLE"

# TensorBoard tags (the names the field already uses).
TB_PREFIX: Final = "TensorProfiling"


def tb_category_tag(category: str) -> str:
    return f"{TB_PREFIX}/Tensor_Category/{category}_MB"


TB_ALLOCATED: Final = f"{TB_PREFIX}/allocated_MB"
TB_RESERVED: Final = f"{TB_PREFIX}/reserved_MB"
TB_PEAK: Final = f"{TB_PREFIX}/peak_MB"
TB_FRAGMENTATION: Final = f"{TB_PREFIX}/fragmentation_percent"
TB_LARGE_COUNT: Final = f"{TB_PREFIX}/Large_Tensors/count"

MB: Final = 1024 * 1024


def rank_file_name(rank: int) -> str:
    return f"{RANK_FILE_PREFIX}{rank}{RANK_FILE_SUFFIX}"
