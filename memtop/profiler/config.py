"""Hook settings, read from the environment that `memtop train` (or the user) sets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from memtop.runs import format as fmt


def _int_env(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        return default


@dataclass
class HookConfig:
    run_dir: Path | None = None
    max_steps: int | None = None
    large_tensor_bytes: int = 1024 * 1024
    max_large_tensors: int = 16
    activations: str = "auto"  # auto: measured every k-th step within the overhead budget; every; off
    tensorboard: bool = True
    overhead_budget: float = 0.001  # the share of step time the per-tensor measuring (walk, gradients, the record they renew) may take
    rank: int = 0

    @classmethod
    def from_env(cls) -> HookConfig:
        run_dir = os.environ.get(fmt.ENV_RUN_DIR)
        max_steps = _int_env(fmt.ENV_MAX_STEPS, None)
        activations = os.environ.get(fmt.ENV_ACTIVATIONS, "auto").strip().lower()
        if activations not in ("auto", "every", "off"):
            activations = "auto"
        return cls(
            run_dir=Path(run_dir) if run_dir else None,
            max_steps=max_steps if max_steps and max_steps > 0 else None,
            large_tensor_bytes=max(0, _int_env(fmt.ENV_LARGE_TENSOR_BYTES, 1024 * 1024) or 0),
            activations=activations,
            tensorboard=os.environ.get(fmt.ENV_TENSORBOARD, "1") not in ("0", "false", "off"),
            rank=_int_env("RANK", 0) or 0,
        )
