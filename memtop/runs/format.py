"""Names and shapes of run format v1 (see docs/run-format.md).

This module is the single source of the record keys; writers and readers import them from here.
"""

from __future__ import annotations

from typing import Any, Final, TypedDict

SCHEMA_VERSION: Final = 1

CATEGORIES: Final = ("parameters", "gradients", "optimizer_state", "activations", "other")

RECORD_TYPES: Final = ("step", "stage", "oom", "warning", "exit")

META_FILE: Final = "meta.json"
OUTPUT_LOG: Final = "output.log"
TENSORBOARD_DIR: Final = "tensorboard"
RANK_FILE_PREFIX: Final = "rank"
RANK_FILE_SUFFIX: Final = ".jsonl"

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


class LargeTensor(TypedDict):
    name: str
    category: str
    bytes: int
    shape: list[int]
    dtype: str


class Categories(TypedDict):
    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    other: int | None


class StepRecord(TypedDict, total=False):
    type: str
    step: int
    time: float
    rank: int
    device: str
    step_time: float | None
    allocated: int | None
    reserved: int | None
    peak: int | None
    categories: Categories
    peak_point: str
    activations_step: int | None
    fragmentation_bytes: int | None
    fragmentation_pct: float | None
    inactive_split_bytes: int | None
    device_used: int | None
    device_total: int | None
    large_tensors: list[LargeTensor]
    sample_every: int
    model_kinds: list[str]  # first step record only: the model's module class names
    optimizer: list[str]  # first step record only: the optimizer's class and its bases


Record = dict[str, Any]
