"""What kind of model and optimizer the run trains, recorded once (in the first step record).

The advisor's rules depend on it: a transformer-block heuristic says nothing useful about an LSTM,
and 8-bit Adam is no advice for an SGD run. Only class names are recorded: no tensor is touched,
and a module tree of thousands of modules is walked once per run.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

MAX_KINDS = 64  # distinct module classes recorded (the rest are counted in "model_kinds_more")


def _optimizer_names(opt: torch.optim.Optimizer) -> list[str]:
    """The optimizer's class and its bases up to ``torch.optim.Optimizer`` (a custom ``MyAdam(Adam)``
    is still Adam-family)."""
    out: list[str] = []
    for cls in type(opt).__mro__:
        if cls is torch.optim.Optimizer or cls is object:
            break
        out.append(cls.__name__)
    return out


def describe(models: Iterable[tuple[str, torch.nn.Module]], optimizers: Iterable[tuple[str, torch.optim.Optimizer]]) -> dict[str, object]:
    """``{"model_kinds": [...], "optimizer": [...]}`` for the step record; empty if anything fails."""
    try:
        kinds: set[str] = set()
        for _, root in models:
            for m in root.modules():
                kinds.add(type(m).__name__)
        opts = [o for _, o in optimizers]
        names = sorted(kinds)
        out: dict[str, object] = {"model_kinds": names[:MAX_KINDS]}
        if len(names) > MAX_KINDS:
            out["model_kinds_more"] = len(names) - MAX_KINDS
        if opts:
            out["optimizer"] = _optimizer_names(opts[0])
        return out
    except Exception:  # noqa: BLE001 -- describing the model must never disturb the training step
        return {}
