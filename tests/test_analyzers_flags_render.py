"""A changed command line in the user's own flag syntax, and every suggested command really runs.

The nanoGPT-style script and its configurator are written here in that shape (``--key=value``
overrides of module globals through ``literal_eval``, types kept); the rendered commands are
executed and the script reports the values it ended up with.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from runfactory import make_run

from memtop.analyzers import cmdline
from memtop.analyzers.advice import suggest
from memtop.analyzers.flags import FlagEntry, apply_flag_changes, detect_flags, flags_to_json
from memtop.runs.reader import load_run
from memtop.runs.rundir import update_meta

CONFIGURATOR = textwrap.dedent(
    """
    # Command-line overrides of the calling script's globals: `--name=value` only.
    import sys
    from ast import literal_eval

    for _arg in sys.argv[1:]:
        if not _arg.startswith("--") or "=" not in _arg:
            raise SystemExit(f"configurator: expected --name=value, got {_arg!r}")
        _name, _text = _arg[2:].split("=", 1)
        if _name not in globals():
            raise SystemExit(f"configurator: no setting {_name!r}")
        try:
            _value = literal_eval(_text)
        except (SyntaxError, ValueError):
            _value = _text
        if type(_value) is not type(globals()[_name]):
            raise SystemExit(f"configurator: {_name} must stay a {type(globals()[_name]).__name__}, got {_text!r}")
        globals()[_name] = _value
    """
)

NANO_SCRIPT = textwrap.dedent(
    """
    import json
    batch_size = 12
    gradient_accumulation_steps = 5 * 8
    learning_rate = 6e-4
    compile = True
    dtype = "float16"
    exec(open("configurator.py").read())
    print(json.dumps({"batch_size": batch_size, "gradient_accumulation_steps": gradient_accumulation_steps,
                      "learning_rate": learning_rate, "compile": compile, "dtype": dtype}))
    """
)

ARGPARSE_SCRIPT = textwrap.dedent(
    """
    import argparse, json
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", "-b", type=int, default=32)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--amp", action="store_true", help="autocast")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="autocast dtype with --amp")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("rest", nargs="*")
    print(json.dumps(vars(p.parse_args())))
    """
)


def _run(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Run a command line whose interpreter is spelled `python`; the script prints its settings."""
    real = [sys.executable if a == "python" else a for a in argv]
    proc = subprocess.run(real, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (argv, proc.stderr)
    settings: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return settings


@pytest.fixture()
def nano(tmp_path: Path) -> Path:
    (tmp_path / "configurator.py").write_text(CONFIGURATOR)
    (tmp_path / "train.py").write_text(NANO_SCRIPT)
    return tmp_path


def test_configurator_command_is_rendered_equals_style_and_runs(nano: Path) -> None:
    argv = ["python", "train.py", "--batch_size=8"]
    flags = detect_flags(argv, nano)
    new = apply_flag_changes(argv, {"batch_size": 4, "gradient_accumulation_steps": 80, "learning_rate": 1, "compile": False, "dtype": "bfloat16"}, flags)
    assert new == ["python", "train.py", "--batch_size=4", "--gradient_accumulation_steps=80", "--learning_rate=1.0", "--compile=False", "--dtype=bfloat16"]
    assert _run(new, nano) == {"batch_size": 4, "gradient_accumulation_steps": 80, "learning_rate": 1.0, "compile": False, "dtype": "bfloat16"}
    # the same script rejects the space style memtop used to produce
    bad = subprocess.run([sys.executable, "train.py", "--batch_size", "4"], cwd=nano, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0


def test_every_suggested_command_runs_for_a_configurator_script(nano: Path, tmp_path: Path) -> None:
    argv = ["python", "train.py", "--batch_size=8", "--compile=False"]
    runs = tmp_path / "runs"
    run = make_run(runs, command=argv)
    update_meta(run, detected_flags=flags_to_json(detect_flags(argv, nano)), cwd=str(nano))
    commands = [s.command for s in suggest(load_run(run)) if s.command]
    assert commands, "the advisor found no flag change for a batch_size/gradient_accumulation_steps script"
    for command in commands:
        assert all(" " not in a for a in command[2:]) and all(a.startswith("--") and "=" in a for a in command[2:]), command
        settings = _run(list(command), nano)
        assert isinstance(settings["batch_size"], int)


def test_every_suggested_command_runs_for_an_argparse_script(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(ARGPARSE_SCRIPT)
    argv = ["python", "train.py", "--batch-size", "8", "--no-compile", "--", "--not-a-flag"]
    run = make_run(tmp_path / "runs", command=argv)
    update_meta(run, detected_flags=flags_to_json(detect_flags(argv, tmp_path)), cwd=str(tmp_path))
    sugs = [s for s in suggest(load_run(run)) if s.command]
    assert {s.rule for s in sugs} & {"mixed_precision", "gradient_checkpointing", "batch_accumulation"}
    for s in sugs:
        settings = _run(list(s.command or ()), tmp_path)
        assert settings["rest"] == ["--not-a-flag"]  # flags were added before the `--`
        assert settings["compile"] is False  # the user's other flags are kept


NANO_TRAINING = textwrap.dedent(
    """
    import torch
    batch_size = 16
    block_size = 32
    gradient_accumulation_steps = 1
    n_layer = 2
    n_embd = 64
    max_iters = 4
    dtype = "float32"
    exec(open("configurator.py").read())
    torch.manual_seed(0)
    blocks = [torch.nn.TransformerEncoderLayer(n_embd, 4, 4 * n_embd, batch_first=True, dropout=0.0) for _ in range(n_layer)]
    model = torch.nn.Sequential(torch.nn.Embedding(256, n_embd), *blocks, torch.nn.Linear(n_embd, 256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    for it in range(max_iters):
        for micro in range(gradient_accumulation_steps):
            x = torch.randint(0, 256, (batch_size, block_size))
            with torch.autocast("cpu", dtype=ptdtype, enabled=ptdtype != torch.float32):
                loss = torch.nn.functional.cross_entropy(model(x).view(-1, 256), x.view(-1))
            (loss / gradient_accumulation_steps).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    print("{}")
    """
)


@pytest.mark.slow
@pytest.mark.short
def test_memtop_train_then_every_suggestion_runs_for_a_nanogpt_style_script(tmp_path: Path) -> None:
    """End to end: flags stored at launch, advice from a real profiled run, each command executed."""
    from conftest import only_run, run_memtop

    (tmp_path / "configurator.py").write_text(CONFIGURATOR)
    (tmp_path / "train.py").write_text(NANO_TRAINING)
    out = run_memtop("train", "--no-tui", "--runs-dir", str(tmp_path / "runs"), "train.py", "--batch_size=32", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = only_run(tmp_path / "runs")
    commands = [s.command for s in suggest(load_run(run)) if s.command]
    assert any("--batch_size=16" in c for c in commands), commands
    for command in commands:
        proc = subprocess.run(list(command), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])


def test_argparse_changes_keep_the_users_spelling(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(ARGPARSE_SCRIPT)
    argv = ["python", "train.py", "-b=8", "--dtype", "fp32"]
    flags = detect_flags(argv, tmp_path)
    new = apply_flag_changes(argv, {"--batch-size": 4, "amp": True, "--dtype": "bf16", "gradient_accumulation_steps": 2}, flags)
    assert new == ["python", "train.py", "-b=4", "--dtype", "bf16", "--amp", "--gradient-accumulation-steps", "2"]
    settings = _run(new, tmp_path)
    assert (settings["batch_size"], settings["amp"], settings["dtype"], settings["gradient_accumulation_steps"]) == (4, True, "bf16", 2)
    off = apply_flag_changes(new, {"amp": False, "compile": False}, flags)
    assert "--amp" not in off and "--no-compile" in off
    assert _run(off, tmp_path)["compile"] is False


def test_equals_style_command_adds_flags_equals_style(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(ARGPARSE_SCRIPT)
    argv = ["python", "train.py", "--batch-size=8", "--dtype=fp32"]
    flags = detect_flags(argv, tmp_path)
    new = apply_flag_changes(argv, {"batch_size": 4, "gradient_accumulation_steps": 2}, flags)
    assert new == ["python", "train.py", "--batch-size=4", "--dtype=fp32", "--gradient-accumulation-steps=2"]
    assert _run(new, tmp_path)["gradient_accumulation_steps"] == 2


def test_hydra_overrides_stay_key_value(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import hydra\n\n@hydra.main(config_path='conf', version_base=None)\ndef main(cfg):\n    pass\n")
    argv = ["python", "app.py", "data.batch_size=32", "+trainer.accumulate_grad_batches=2", "model.compile=false"]
    flags = detect_flags(argv, tmp_path)
    new = apply_flag_changes(argv, {"data.batch_size": 16, "trainer.accumulate_grad_batches": 4, "model.compile": True}, flags)
    assert new == ["python", "app.py", "data.batch_size=16", "+trainer.accumulate_grad_batches=4", "model.compile=true"]


def test_dotted_equals_flags_from_the_command_stay_so(tmp_path: Path) -> None:
    (tmp_path / "chargpt.py").write_text("import sys\nconfig.merge_from_args(sys.argv[1:])\n")
    argv = ["python", "chargpt.py", "--trainer.batch_size=32", "--system.compile=True"]
    flags = detect_flags(argv, tmp_path)
    new = apply_flag_changes(argv, {"--trainer.batch_size": 16, "--system.compile": False}, flags)
    assert new == ["python", "chargpt.py", "--trainer.batch_size=16", "--system.compile=False"]


def test_pyproject_declared_override_and_equals_flags(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.memtop.flags]\nbatch_size = "trainer.batch"\n'
        'gradient_checkpointing = { flag = "--ckpt", kind = "bool", syntax = "equals", bool_values = ["yes", "no"] }\n'
        'frames = { flag = "--frames", kind = "int", syntax = "equals" }\n'
    )
    argv = ["python", "x.py"]
    flags = detect_flags(argv, tmp_path)
    assert apply_flag_changes(argv, {"trainer.batch": 4, "--ckpt": True, "--frames": 8}, flags) == ["python", "x.py", "trainer.batch=4", "--ckpt=yes", "--frames=8"]


def test_set_value_and_set_bool_cases() -> None:
    bs = FlagEntry(flag="--batch-size", kind="int", aliases=("-b",))
    assert cmdline.set_value(["--batch-size", "8", "--lr", "1"], bs, "4") == ["--batch-size", "4", "--lr", "1"]
    assert cmdline.set_value(["--batch-size=8"], bs, "4") == ["--batch-size=4"]
    assert cmdline.set_value(["-b", "8"], bs, "4") == ["-b", "4"]
    assert cmdline.set_value(["--lr", "1"], bs, "4") == ["--lr", "1", "--batch-size", "4"]
    assert cmdline.set_value(["a", "--", "--batch-size", "9"], bs, "4") == ["a", "--batch-size", "4", "--", "--batch-size", "9"]
    amp = FlagEntry(flag="--amp", kind="bool", default="false")
    assert cmdline.set_bool(["--lr", "1"], amp, True) == ["--lr", "1", "--amp"]
    assert cmdline.set_bool(["--amp", "--lr", "1"], amp, True) == ["--amp", "--lr", "1"]
    assert cmdline.set_bool(["--amp", "--lr", "1"], amp, False) == ["--lr", "1"]
    opt = FlagEntry(flag="--compile", kind="bool", aliases=("--no-compile",), default="true")
    assert cmdline.set_bool(["--lr", "1"], opt, False) == ["--lr", "1", "--no-compile"]
    assert cmdline.set_bool(["--no-compile"], opt, True) == []
    hf = FlagEntry(flag="--bf16", kind="bool", default="false", source="hf")
    assert cmdline.set_bool(["--bf16", "False", "--x", "1"], hf, True) == ["--bf16", "True", "--x", "1"]
    assert cmdline.set_bool(["--x", "1"], hf, True) == ["--x", "1", "--bf16"]
    with pytest.raises(KeyError):
        apply_flag_changes(["python", "t.py"], {"--batch-size": 4}, [])
    head, args = cmdline.split_command(["torchrun", "--nproc-per-node", "2", "t.py", "--x", "1"])
    assert head == ["torchrun", "--nproc-per-node", "2", "t.py"] and args == ["--x", "1"]
    assert cmdline.join(["python", "t.py", "--name", "a b"], {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}) == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python t.py --name 'a b'"


def test_a_rendered_change_reads_back_as_the_new_value() -> None:
    """Property: whatever the syntax and wherever the flag stands, the changed argv says the new value."""
    import random

    from memtop.analyzers.flags import apply_command_values

    rng = random.Random(7)
    specs = [
        FlagEntry(flag="--batch-size", kind="int", aliases=("-b",), syntax="space"),
        FlagEntry(flag="--batch_size", kind="int", source="configurator", syntax="equals"),
        FlagEntry(flag="data.batch_size", kind="int", source="command", syntax="override"),
        FlagEntry(flag="--amp", kind="bool", default="false", aliases=("--no-amp",)),
        FlagEntry(flag="--compile", kind="bool", source="configurator", syntax="equals", bool_values=("True", "False")),
    ]
    for _ in range(300):
        entry = rng.choice(specs)
        others = ["--lr", "0.1", "x.py", "--seed=3"]
        rng.shuffle(others)
        if entry.kind == "bool":
            start = [rng.choice([entry.options[0], entry.options[-1]])] if entry.bool_values is None else [f"{entry.flag}={rng.choice(entry.bool_values)}"]
            value: str | bool = rng.choice([True, False])
        else:
            spelled = rng.choice(entry.options)
            start = [f"{spelled}=8"] if entry.syntax != "space" or rng.random() < 0.5 else [spelled, "8"]
            value = str(rng.randint(1, 64))
        args = others[:2] + (start if rng.random() < 0.7 else []) + others[2:]
        if rng.random() < 0.3:
            args += ["--", entry.flag, "tail"]
        new = apply_flag_changes(["python", "t.py", *args], {entry.flag: value}, [entry])
        assert new[:2] == ["python", "t.py"]
        (after,) = apply_command_values([entry], new[2:])
        expected = ("true" if value else "false") if isinstance(value, bool) else value
        got = after.value if after.value is not None else (entry.default or "false")
        assert got == expected, (entry.flag, args, value, new)
        if "--" in args:
            assert new[new.index("--") :] == args[args.index("--") :]  # nothing after `--` is touched
