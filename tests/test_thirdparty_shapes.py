"""`memtop train` on training loops in the shapes users' code has (tests/scripts/shapes_train.py).

The script writes its own ground truth (unique storages of every model's parameters and buffers,
every optimizer-state tensor, its count of optimizer.step() calls), computed without memtop. The
findings these tests pin are written up in docs/validation/third-party.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SCRIPTS, only_run, read_records, run_memtop
from torch import nn

SHAPES = str(SCRIPTS / "shapes_train.py")
EVERY = {"MEMTOP_ACTIVATIONS": "every"}

pytestmark = pytest.mark.slow


def train(tmp_path: Path, shape: str, *extra: str) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    truth_file = tmp_path / "truth.json"
    out = run_memtop(
        "train", "--no-tui", "--runs-dir", str(tmp_path / "runs"), "--", sys.executable, SHAPES,
        "--shape", shape, "--steps", "3", "--dump-truth", str(truth_file), *extra, env=EVERY,
    )
    assert out.returncode == 0, out.stderr
    run = only_run(tmp_path / "runs")
    assert (run / "output.log").read_text().count("done") == 1  # the script ran exactly once
    records = read_records(run) if (run / "rank0.jsonl").exists() else []  # no step: maybe no file at all
    steps = [r for r in records if r["type"] == "step"]
    return run, json.loads(truth_file.read_text()), steps


@pytest.mark.parametrize("shape", [pytest.param("gan", marks=pytest.mark.short), "compile", "hf", "lightning", "reentrant"])
def test_parameters_and_optimizer_state_match_the_truth(tmp_path: Path, shape: str) -> None:
    _, truth, steps = train(tmp_path, shape)
    last = steps[-1]
    # every forward moment and the optimizer-step moment see the same parameters and state
    assert last["categories"]["parameters"] == truth["parameters"]
    assert last["moments"]["optimizer_step"]["optimizer_state"] == truth["optimizer_state"]
    # one record per iteration: with two optimizers (GAN) the first one to step marks the step
    per_iteration = 2 if shape == "gan" else 1
    assert len(steps) == truth["optimizer_steps"] // per_iteration == 3


@pytest.mark.parametrize("shape", ["distill", "ema"])
def test_frozen_teacher_and_ema_copy_are_parameters(tmp_path: Path, shape: str) -> None:
    # found open on the branch's base (only the optimizer's model was counted); right since hooktruth
    _, truth, steps = train(tmp_path, shape)
    assert steps[-1]["categories"]["parameters"] == truth["parameters"]


def _saved_bytes_of_reentrant_forward() -> int:
    """Autograd's own saved tensors (a saved-tensors hook) for one forward of the reentrant model."""
    spec = importlib.util.spec_from_file_location("shapes_train", SHAPES)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.CheckpointedNet()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x = torch.randn(16, 64, requires_grad=True)
        nn.functional.cross_entropy(model(x), torch.randint(0, 10, (16,)))
    return sum(seen.values())


def test_reentrant_checkpointing_activations_are_the_forward_saved_tensors(tmp_path: Path) -> None:
    # found open on the branch's base (the recomputation's nested backward was read as the end of
    # forward: one block's 20,480 bytes instead of 17,156); right since hooktruth
    _, _, steps = train(tmp_path, "reentrant")
    assert steps[-1]["moments"]["forward_end"]["activations"] == _saved_bytes_of_reentrant_forward()


def test_hand_written_update_is_stepped_per_backward_and_explicit_steps_work(tmp_path: Path) -> None:
    # word_language_model's shape: a hand-written SGD update, no torch optimizer to mark the steps
    run, truth, steps = train(tmp_path / "bare", "manual")
    assert truth["optimizer_steps"] == 3 and steps
    assert steps[-1]["categories"]["parameters"] == truth["parameters"]
    warnings = [r["message"] for r in read_records(run) if r["type"] == "warning"]
    assert any("prof.step()" in w for w in warnings), warnings
    # the post-mortem says it too, not only the live status line
    report = run_memtop("analyze", str(run), "--json")
    assert report.returncode == 0, report.stderr
    assert any(w.startswith("hook (rank 0): no optimizer step") for w in json.loads(report.stdout)["warnings"])
    # the remedy the warning gives: memtop.profile(model) and prof.step()
    _, truth, steps = train(tmp_path / "explicit", "manual", "--explicit")
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[-1]["categories"]["parameters"] == truth["parameters"]


@pytest.mark.short
def test_a_run_without_any_step_is_explained(tmp_path: Path) -> None:
    run, _, steps = train(tmp_path, "inference")
    assert steps == []
    out = run_memtop("analyze", str(run))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "without an optimizer step or a backward pass" in out.stderr and "prof.step()" in out.stderr
