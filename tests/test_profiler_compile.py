"""The hook on a ``torch.compile``d model: activations are what the compiled graph saves, every step.

A compiled model's backward is one ``CompiledFunctionBackward`` node holding the tensors that
AOTAutograd's partitioner chose to save (not the eager model's). Truth is what autograd's own
saved-tensors hook sees during the compiled forward (it sees the compiled function's saves), minus
parameter storages; the figure must match on every step and must not grow with the number of
steps, also when the batch size changes (a recompile, then dynamic shapes). ``aot_eager`` runs the
same AOTAutograd graph without generating C++ (seconds); inductor is the slow form.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_profiler_shapes import Mlp, check, step_records, train_step, zero_code

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]

BATCHES = (256, 384, 512, 256, 384, 512, 256)


def _train_compiled(tmp_path: Path, backend: str) -> None:
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = Mlp(64, 256, 64)
    compiled = torch.compile(model, backend=backend)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    expected = []
    with zero_code(tmp_path) as records:
        for batch in BATCHES:
            expected.append(train_step(model, opt, compiled, torch.randn(batch, 64)))
    steps = step_records(records())
    check(steps, expected)
    # no growth with the number of steps: the same batch size gives the same figure each time
    by_batch: dict[int, set[int]] = {}
    for batch, rec in zip(BATCHES, steps, strict=True):
        by_batch.setdefault(batch, set()).add(rec["moments"]["forward_end"]["activations"])
    assert all(len(v) == 1 for v in by_batch.values()), by_batch


def test_compiled_model_aot_eager(tmp_path: Path) -> None:
    _train_compiled(tmp_path, "aot_eager")


@pytest.mark.slow
def test_compiled_model_inductor(tmp_path: Path) -> None:
    _train_compiled(tmp_path, "inductor")
