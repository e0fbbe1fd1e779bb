"""The advisor on synthetic runs: estimates are arithmetic on the measured figures, commands are exact,
and a flag the script does not have is never suggested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runfactory import GiB, MiB, make_run

from memtop.analyzers.advice import Suggestion, suggest
from memtop.runs.rundir import update_meta


def flag(name: str, value: str | None, kind: str = "int", choices: list[str] | None = None, help: str = "", default: str | None = None) -> dict[str, Any]:
    return {
        "flag": name,
        "value": value,
        "dest": name.lstrip("-").replace("-", "_"),
        "kind": kind,
        "choices": choices,
        "source": "argparse",
        "default": default if default is not None else (value if kind != "bool" else "false"),
        "aliases": [],
        "help": help,
    }


TRANSFORMER_FLAGS = [
    flag("--batch-size", "8"),
    flag("--gradient-accumulation-steps", "1"),
    flag("--amp", "false", "bool", help="autocast forward and loss in --dtype"),
    flag("--dtype", "bf16", "choice", ["bf16", "fp16", "fp32"], help="autocast dtype with --amp"),
    flag("--gradient-checkpointing", "false", "bool", help="recompute each block in backward"),
    flag("--n-layers", "4"),
    flag("--lora-r", "0"),
]


def _run(tmp_path: Path, flags: list[dict[str, Any]] | None, command: list[str], **kw: Any) -> Path:
    run = make_run(tmp_path, command=command, **kw)
    if flags is not None:
        update_meta(run, detected_flags=flags)
    return run


def _by_rule(sugs: list[Suggestion]) -> dict[str, Suggestion]:
    out: dict[str, Suggestion] = {}
    for s in sugs:
        out.setdefault(s.rule, s)
    return out


def _advice(run: Path) -> list[Suggestion]:
    from memtop.runs.reader import load_run

    return suggest(load_run(run), detect_flags=False)


CMD = ["python", "train.py", "--batch-size", "8"]


def test_sorted_by_saving_and_shaped(tmp_path: Path) -> None:
    sugs = _advice(_run(tmp_path, TRANSFORMER_FLAGS, CMD))
    assert sugs, "a 41%-activations run gets suggestions"
    savings = [s.saving_bytes for s in sugs if s.saving_bytes is not None]
    assert savings == sorted(savings, reverse=True)
    for s in sugs:
        assert s.rule and s.title and s.reason and s.change and s.confidence in ("high", "medium", "low")


def test_batch_accumulation_keeps_the_effective_batch(tmp_path: Path) -> None:
    s = _by_rule(_advice(_run(tmp_path, TRANSFORMER_FLAGS, CMD)))["batch_accumulation"]
    # the step's peak (at the end of forward): half of the 6 GiB of activations and of the 512 MiB of
    # inputs/temporaries; the gradients (2 GiB) are already alive there, so accumulation adds none
    assert s.saving_bytes == 3 * GiB + 256 * MiB
    assert s.category == "activations"
    assert s.change == "python train.py --batch-size 4 --gradient-accumulation-steps 2"
    assert s.command == ("python", "train.py", "--batch-size", "4", "--gradient-accumulation-steps", "2")
    assert "41.4% of the peak" in s.reason


def test_mixed_precision_uses_the_scripts_flags_and_the_saved_tensor_nodes(tmp_path: Path) -> None:
    run = _run(tmp_path, TRANSFORMER_FLAGS, CMD)
    # the synthetic run lists one saved softmax result: autocast keeps softmax in fp32 → nothing to halve
    assert "mixed_precision" not in _by_rule(_advice(run))
    rank0 = run / "rank0.jsonl"
    rank0.write_text(rank0.read_text().replace("saved[SoftmaxBackward0].result", "saved[AddmmBackward0].mat1"))
    s = _by_rule(_advice(run))["mixed_precision"]
    assert s.change == "python train.py --batch-size 8 --amp"
    # all listed saved bytes are matmul inputs: 6 GiB / 2, minus the bf16 copies of 2 GiB of weights
    assert s.saving_bytes == 3 * GiB - 1 * GiB
    assert "100.0% of the saved bytes" in s.assumption


def test_no_flag_means_a_code_change(tmp_path: Path) -> None:
    flags = [flag("--lr", "0.001", "float")]
    sugs = _by_rule(_advice(_run(tmp_path, flags, ["python", "train.py", "--lr", "0.001"])))
    for rule in ("gradient_checkpointing", "mixed_precision"):
        if rule in sugs:
            assert sugs[rule].change.startswith("in code:"), sugs[rule].change
            assert sugs[rule].command is None
    # a batch-size flag is never invented
    for s in sugs.values():
        assert "--batch-size" not in s.change and "--amp" not in s.change and "--gradient-checkpointing" not in s.change


def test_unknown_flags_say_so(tmp_path: Path) -> None:
    sugs = _by_rule(_advice(_run(tmp_path, [], ["python", "missing.py"])))
    s = sugs["gradient_checkpointing"]
    assert "could not read the script's flags" in s.change


def test_checkpointing_estimate_and_flag(tmp_path: Path) -> None:
    s = _by_rule(_advice(_run(tmp_path, TRANSFORMER_FLAGS, CMD)))["gradient_checkpointing"]
    assert s.change == "python train.py --batch-size 8 --gradient-checkpointing"
    # 6 GiB of activations, none of them loss tensors: 7/8 go; on CUDA the block recomputed in
    # backward (1/4 of them, 4 blocks) is alive at the allocator peak
    assert s.saving_bytes == int(6 * GiB * 7 / 8) - int(6 * GiB / 4)
    assert "4 blocks (from --n-layers 4)" in s.assumption


def test_headroom_grows_the_batch_on_a_roomy_device(tmp_path: Path) -> None:
    s = _by_rule(_advice(_run(tmp_path, TRANSFORMER_FLAGS, CMD)))["headroom"]
    assert s.change == "python train.py --batch-size 16"
    assert s.saving_bytes is not None and s.saving_bytes < 0
    # (activations + other) per sample × 8 more samples
    assert -s.saving_bytes == int((6 * GiB + 512 * MiB) / 8 * 8)


def test_no_headroom_on_a_full_device(tmp_path: Path) -> None:
    sugs = _by_rule(_advice(_run(tmp_path, TRANSFORMER_FLAGS, CMD, per_step=lambda s, r: {"device_total": 16 * GiB})))
    assert "headroom" not in sugs and "costly_saving_off" not in sugs


def test_costly_saving_off_when_memory_is_plentiful(tmp_path: Path) -> None:
    flags = [dict(f) for f in TRANSFORMER_FLAGS]
    for f in flags:
        if f["flag"] == "--gradient-checkpointing":
            f["value"] = "true"
    run = _run(tmp_path, flags, [*CMD, "--gradient-checkpointing"], per_step=lambda s, r: {"activations": 512 * MiB})
    sugs = _by_rule(_advice(run))
    s = sugs["costly_saving_off"]
    assert s.change == "python train.py --batch-size 8"
    assert s.saving_bytes is not None and s.saving_bytes < 0
    assert "gradient_checkpointing" not in sugs


def test_half_precision_of_the_largest_parameter(tmp_path: Path) -> None:
    flags = [flag("--optimize-memory", "false", "bool", help="store SH coefficients in fp16")]
    run = _run(tmp_path, flags, ["python", "splat.py"], per_step=lambda s, r: {"activations": 256 * MiB, "parameters": 8 * GiB, "optimizer_state": 16 * GiB, "gradients": 0})
    s = _by_rule(_advice(run))["half_precision"]
    assert s.change == "python splat.py --optimize-memory"
    assert s.category == "model_state"
    # the listed parameter (1/4 of parameters) and its listed exp_avg halve; the second Adam state is assumed
    p = 8 * GiB // 4
    assert s.saving_bytes == (p + p) // 2  # param + listed exp_avg (the family's listed states)


def test_expandable_segments_for_a_fragmenting_cuda_run(tmp_path: Path) -> None:
    run = _run(tmp_path, TRANSFORMER_FLAGS, CMD, per_step=lambda s, r: {"fragmentation": 8 * GiB})
    s = _by_rule(_advice(run))["expandable_segments"]
    assert s.env == (("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),)
    assert s.change == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python train.py --batch-size 8"
    assert s.saving_bytes == 8 * GiB


def test_no_fragmentation_advice_on_cpu(tmp_path: Path) -> None:
    sugs = _by_rule(_advice(_run(tmp_path, TRANSFORMER_FLAGS, CMD, device="cpu")))
    assert "expandable_segments" not in sugs and "empty_cache" not in sugs


def test_empty_cache_policy_from_help(tmp_path: Path) -> None:
    frag = flag("--fragmentation", "aggressive", "choice", ["aggressive", "normal", "minimal"], help="empty_cache policy: aggressive = never + varying scratch buffers, normal = every 100 steps, minimal = every step")
    run = _run(tmp_path, [frag], ["python", "splat.py", "--fragmentation", "aggressive"], per_step=lambda s, r: {"fragmentation": 6 * GiB})
    s = _by_rule(_advice(run))["empty_cache"]
    assert s.change == "python splat.py --fragmentation normal"


def test_leak_suggestion(tmp_path: Path) -> None:
    run = _run(tmp_path, TRANSFORMER_FLAGS, CMD, steps=60, per_step=lambda s, r: {"activations": 6 * GiB + s * 50 * MiB})
    s = _by_rule(_advice(run))["leak"]
    assert s.category == "activations"
    assert s.change.startswith("in code:")
    assert s.saving_bytes is not None and s.saving_bytes > 40 * 50 * MiB


def test_lora_for_a_full_finetune(tmp_path: Path) -> None:
    s = _by_rule(_advice(_run(tmp_path, TRANSFORMER_FLAGS, CMD)))["lora"]
    assert s.change == "python train.py --batch-size 8 --lora-r 8"


@pytest.mark.parametrize("bad_meta", [None, {"schema": 1}, {"schema": 1, "command": "not a list", "detected_flags": "nope"}])
def test_partial_or_broken_input_never_raises(tmp_path: Path, bad_meta: dict[str, Any] | None) -> None:
    run = make_run(tmp_path, steps=3)
    if bad_meta is None:
        (run / "meta.json").unlink()
    else:
        (run / "meta.json").write_text(__import__("json").dumps(bad_meta))
    assert isinstance(_advice(run), list)
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "rank0.jsonl").write_text('{"type":"step","step":"x"}\n{garbage\n')
    assert _advice(empty) == []


def test_oom_fits_with_expandable_segments_when_the_unused_reserve_covers_it(tmp_path: Path) -> None:
    from memtop.analyzers.report import build
    from memtop.runs.reader import load_run

    oom = {"type": "oom", "schema": 1, "rank": 0, "time": 1.0, "step": 11, "device": "cuda:0", "message": "CUDA out of memory.", "requested_bytes": GiB, "categories": {"parameters": 2 * GiB, "gradients": 2 * GiB, "optimizer_state": 4 * GiB, "activations": 60 * GiB, "other": GiB}, "allocated": 69 * GiB, "reserved": 72 * GiB, "device_free": 256 * MiB, "large_tensors": []}
    run = _run(tmp_path, TRANSFORMER_FLAGS, CMD, steps=10, extra_records=[oom], status="oom", exit_code=1)
    o = build(load_run(run), detect_flags=False).oom
    assert o is not None and o.shortfall_bytes == GiB - 256 * MiB and o.reserved_unused == 3 * GiB
    assert o.fits_with is not None and o.fits_with.rule == "expandable_segments"
    assert o.fits_with.saving_bytes == 3 * GiB  # what sat reserved but unused at the failed allocation
    assert o.smallest_batch is not None and o.smallest_batch.new == 7  # 6 GiB / 8 per sample ≥ 768 MiB
