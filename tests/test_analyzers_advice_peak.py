"""The advisor estimates the step's peak (both moments), knows the model, keeps a change's meaning,
and explains an impossible OOM. Synthetic CPU runs, where the peak is the tracked bytes, so the
expected figures are sums the test writes out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from runfactory import GiB, MiB, make_run

from memtop.analyzers.advice import Suggestion, suggest
from memtop.analyzers.compare import Row
from memtop.analyzers.ranks import analyze as analyze_ranks
from memtop.analyzers.report import build
from memtop.analyzers.series import rank_series
from memtop.profiler.modelinfo import describe
from memtop.render.text import render
from memtop.runs.reader import load_run
from memtop.runs.rundir import update_meta


def flag(name: str, value: str, kind: str = "int", help: str = "") -> dict[str, Any]:
    return {"flag": name, "value": value, "dest": name.lstrip("-").replace("-", "_"), "kind": kind, "choices": None, "source": "argparse", "default": value if kind != "bool" else "false", "aliases": [], "help": help}


PAR, GRD, OPT = 4 * MiB, 4 * MiB, 8 * MiB  # parameters, gradients (at the optimizer step), Adam state


def cpu_run(
    tmp_path: Path,
    *,
    acts: int,
    flags: list[dict[str, Any]],
    command: list[str],
    peak_point: str = "forward_end",
    extra: dict[str, Any] | None = None,
    extra_records: list[dict[str, Any]] | None = None,
) -> Path:
    """A CPU run whose step records carry both moments: forward end (activations, no gradients)
    and optimizer step (gradients, no activations); the record's categories are the larger one."""
    fwd = {"allocated": None, "parameters": PAR, "gradients": 0, "optimizer_state": OPT, "activations": acts}
    opt = {"allocated": None, "parameters": PAR, "gradients": GRD, "optimizer_state": OPT, "activations": 0}
    at = fwd if peak_point == "forward_end" else opt
    run = make_run(
        tmp_path,
        steps=6,
        device="cpu",
        command=command,
        per_step=lambda s, r: {k: at[k] for k in ("parameters", "gradients", "optimizer_state", "activations")},
        extra_records=extra_records,
    )
    path = run / "rank0.jsonl"
    lines = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "step":
            rec["moments"] = {"forward_end": fwd, "optimizer_step": opt}
            rec["peak_point"] = peak_point
            rec["large_tensors"] = []
            rec.update(extra or {})
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")
    update_meta(run, detected_flags=flags)
    return run


def by_rule(run: Path) -> dict[str, Suggestion]:
    out: dict[str, Suggestion] = {}
    for s in suggest(load_run(run), detect_flags=False):
        out.setdefault(s.rule, s)
    return out


def level(p: int, g: int, o: int, a: int) -> int:
    return p + g + o + a


BATCH = ["python", "train.py", "--batch-size", "8"]


def test_accumulation_estimate_keeps_the_gradients_alive_in_the_second_forward(tmp_path: Path) -> None:
    flags = [flag("--batch-size", "8"), flag("--grad-accum", "1")]
    s = by_rule(cpu_run(tmp_path, acts=12 * MiB, flags=flags, command=BATCH))["batch_accumulation"]
    before = max(level(PAR, 0, OPT, 12 * MiB), level(PAR, GRD, OPT, 0))
    after = max(level(PAR, GRD, OPT, 6 * MiB), level(PAR, GRD, OPT, 0))  # gradients of micro-batch 1 alive
    assert s.saving_bytes == before - after == 2 * MiB  # not the 6 MiB of activations
    assert s.command == ("python", "train.py", "--batch-size", "4", "--grad-accum", "2")
    assert "gradients of the first micro-batch" in s.assumption


def test_without_an_accumulation_flag_accumulation_is_a_code_change_and_the_flag_says_what_it_changes(tmp_path: Path) -> None:
    sugs = by_rule(cpu_run(tmp_path, acts=12 * MiB, flags=[flag("--batch-size", "8")], command=BATCH))
    acc = sugs["batch_accumulation"]
    assert acc.command is None and acc.change.startswith("in code")
    assert "optimizer.step()" in acc.change and "--batch-size 4" in acc.change
    small = sugs["smaller_batch"]
    assert small.command == ("python", "train.py", "--batch-size", "4")
    assert "effective batch 8 → 4" in small.cost and "same effective batch" not in small.cost
    # no accumulation: no gradients at the end of the forward pass
    assert small.saving_bytes == level(PAR, 0, OPT, 12 * MiB) - max(level(PAR, 0, OPT, 6 * MiB), level(PAR, GRD, OPT, 0))


def test_a_saving_that_moves_the_peak_to_the_optimizer_step_counts_only_down_to_it(tmp_path: Path) -> None:
    flags = [flag("--batch-size", "8")]
    s = by_rule(cpu_run(tmp_path, acts=5 * MiB, flags=flags, command=BATCH))["smaller_batch"]
    # forward end 17 MiB → 14.5 MiB, but the optimizer step holds 16 MiB: the peak falls 1 MiB
    assert s.saving_bytes == level(PAR, 0, OPT, 5 * MiB) - level(PAR, GRD, OPT, 0) == 1 * MiB
    assert "the peak moves to the end of the optimizer step" in s.assumption


def test_checkpointing_off_fires_when_checkpointing_moved_the_peak_to_the_optimizer_step(tmp_path: Path) -> None:
    flags = [flag("--gradient-checkpointing", "true", "bool")]
    cmd = ["python", "train.py", "--gradient-checkpointing"]
    run = cpu_run(tmp_path, acts=MiB // 4, flags=flags, command=cmd, peak_point="optimizer_step", extra={"model_kinds": ["Block", "CausalSelfAttention", "Linear"]})
    s = by_rule(run)["costly_saving_off"]
    assert s.command == ("python", "train.py")
    # the kept 256 KiB grow 8× to 2 MiB at the end of forward: 14 MiB, still under the step end's 16 MiB
    assert s.saving_bytes == 0 and "the peak does not rise" in s.cost
    assert "optimizer step" in s.reason


def test_rules_know_the_model_and_the_optimizer(tmp_path: Path) -> None:
    flags = [flag("--batch-size", "8")]
    transformer = {"model_kinds": ["Block", "CausalSelfAttention", "Linear"], "optimizer": ["AdamW"]}
    lstm = {"model_kinds": ["LSTM", "Linear"], "optimizer": ["SGD"]}
    mlp = {"model_kinds": ["Linear", "ReLU", "Sequential"], "optimizer": ["MyAdam", "Adam"]}
    sugs = {name: by_rule(cpu_run(tmp_path / name, acts=40 * MiB, flags=flags, command=BATCH, extra=extra)) for name, extra in (("t", transformer), ("l", lstm), ("m", mlp))}
    assert "gradient_checkpointing" in sugs["t"]
    assert "gradient_checkpointing" not in sugs["l"] and "gradient_checkpointing" not in sugs["m"]
    # optimizer state half of the peak: 8-bit Adam is no advice for SGD; a subclass of Adam is Adam-family
    state = {name: by_rule(cpu_run(tmp_path / f"o{name}", acts=MiB, flags=flags, command=BATCH, extra=extra)) for name, extra in (("l", lstm), ("m", mlp))}
    assert "optimizer_state" not in state["l"]
    assert "optimizer_state" in state["m"] and "(MyAdam)" in state["m"]["optimizer_state"].reason


def test_model_kinds_and_optimizer_are_described_from_real_modules() -> None:
    class MyAdam(torch.optim.Adam):
        pass

    lstm = torch.nn.LSTM(4, 8)
    info = describe([("model", lstm)], [("optimizer", torch.optim.SGD(lstm.parameters(), lr=0.1))])
    assert info == {"model_kinds": ["LSTM"], "optimizer": ["SGD"]}
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    info = describe([("model", mlp)], [("optimizer", MyAdam(mlp.parameters()))])
    assert info == {"model_kinds": ["Linear", "ReLU", "Sequential"], "optimizer": ["MyAdam", "Adam"]}


def test_the_hook_records_the_model_kinds_in_the_first_step(tmp_path: Path) -> None:
    import memtop

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with memtop.profile(model, opt, runs_dir=tmp_path, name="kinds"):
        for _ in range(2):
            model(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    steps = load_run(run).steps()
    assert steps[0].model_kinds == ("GELU", "Linear", "Sequential") and steps[0].optimizer == ("SGD",)
    assert steps[1].model_kinds is None  # written once


TiB = 1 << 40


def test_an_oom_request_larger_than_the_device_is_named_and_gets_no_saving(tmp_path: Path) -> None:
    requested = 1_000_000 * 2_048_000 * 4  # ≈7.45 TiB of fp32, sized by --size
    oom = {"type": "oom", "schema": 1, "rank": 0, "time": 2e9, "step": 3, "device": "cpu", "message": "out of memory", "requested_bytes": requested, "categories": {"parameters": PAR, "gradients": GRD, "optimizer_state": OPT, "activations": 0, "other": None}, "allocated": None, "reserved": None, "device_free": 20 * GiB, "large_tensors": []}
    flags = [flag("--batch-size", "8"), flag("--size", "1000000"), flag("--seed", "3")]
    run = cpu_run(tmp_path, acts=12 * MiB, flags=flags, command=[*BATCH, "--size", "1000000"], extra_records=[oom])
    rep = build(load_run(run), detect_flags=False)
    o = rep.oom
    assert o is not None and o.request_too_large
    assert o.fits_with is None and o.smallest_batch is None
    assert o.request_flag is not None and (o.request_flag.flag, o.request_flag.value) == ("--size", 1_000_000)
    assert "no saving can fit it" in o.explanation and "7.45 TiB" in o.explanation and "95× the device's 80.0 GiB" in o.explanation
    assert "--size 1000000" in o.explanation
    assert [s for s in rep.suggestions if s.rule != "leak"] == []


def test_compare_says_gone_instead_of_minus_100_percent() -> None:
    gone = Row("activations", "bytes", 5.0 * MiB, 0.0)
    assert gone.diff_pct is None and gone.note == "gone"
    new = Row("activations", "bytes", 0.0, 5.0 * MiB)
    assert new.diff_pct is None and new.note == "new"
    assert Row("peak", "bytes", 4.0, 2.0).diff_pct == -50.0 and Row("peak", "bytes", 4.0, 2.0).note == ""


def test_equal_ranks_are_balanced(tmp_path: Path) -> None:
    rk = analyze_ranks(rank_series(load_run(make_run(tmp_path, ranks=2, steps=5))))
    assert rk is not None and rk.verdict == "balanced"
    assert rk.message.startswith("ranks are balanced") and "above rank 0" not in rk.message


def test_analyze_names_the_exception_of_a_crashed_run(tmp_path: Path) -> None:
    exit_rec = {"type": "exit", "schema": 1, "rank": 0, "time": 2e9, "reason": "exception", "exception": "ValueError", "steps": 5, "pid": 1}
    run = make_run(tmp_path, steps=5, status="failed", exit_code=1, extra_records=[exit_rec])
    rep = build(load_run(run), detect_flags=False)
    assert rep.exception == "ValueError"
    assert "failed (exit 1), raised ValueError" in render(rep, plot=False)


def test_compare_cli_reads_gone_for_checkpointed_activations(tmp_path: Path) -> None:
    from clikit import memtop

    make_run(tmp_path, "20261122-100000-before", steps=4)
    make_run(tmp_path, "20261122-110000-after", steps=4, t0=1_700_100_000.0, per_step=lambda s, r: {"activations": 0})
    proc = memtop("compare", "before", "after", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("activations"))
    assert row.rstrip().endswith("gone") and "-100" not in row
