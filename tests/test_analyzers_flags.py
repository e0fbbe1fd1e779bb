"""Flag detection from the script's source: argparse, click, typer, HfArgumentParser, a nanoGPT-style
configurator and ``[tool.memtop.flags]``. Every script writes a marker file if it is ever run: the
marker must stay absent (the source is read, never executed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from memtop.analyzers.flags import (
    FlagEntry,
    detect_flags,
    find_target,
    flags_from_json,
    flags_to_json,
    parse_help_text,
    parse_launch,
    pyproject_flags,
    read_source_flags,
)
from memtop.analyzers.roles import role_of, roles

MARK = 'import pathlib; pathlib.Path("RAN").write_text("this script was executed")\n'


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MARK + textwrap.dedent(body))
    return path


def _by_flag(entries: list[FlagEntry]) -> dict[str, FlagEntry]:
    return {e.flag: e for e in entries}


def _never_ran(tmp_path: Path) -> None:
    assert not (tmp_path / "RAN").exists(), "flag detection executed the script"
    assert not list(tmp_path.rglob("__pycache__"))


ARGPARSE = """
import argparse

def build_parser():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", "-b", type=int, default=32, help="per-device batch")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--amp", action="store_true", help="autocast")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="autocast dtype with --amp")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-mode", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--warmup", default=2 * 50)
    p.add_argument("data")
    g = p.add_argument_group("model")
    g.add_argument("--n-layers", type=int, default=4)
    return p

if __name__ == "__main__":
    args = build_parser().parse_args()
"""


def test_argparse_read_statically_with_values(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", ARGPARSE)
    entries = detect_flags(["python", "train.py", "data/", "--batch-size", "8", "--amp", "--dtype=fp16"], tmp_path)
    flags = _by_flag(entries)
    bs = flags["--batch-size"]
    assert (bs.value, bs.default, bs.dest, bs.kind, bs.source, bs.aliases, bs.syntax) == ("8", "32", "batch_size", "int", "argparse", ("-b",), "space")
    assert flags["--gradient-accumulation-steps"].value == "1"
    assert flags["--lr"].kind == "float" and flags["--lr"].value == "0.001"
    assert flags["--amp"].kind == "bool" and flags["--amp"].value == "true"
    assert flags["--dtype"].kind == "choice" and flags["--dtype"].choices == ("bf16", "fp16", "fp32")
    assert flags["--dtype"].value == "fp16" and flags["--dtype"].syntax == "equals"  # the user's spelling
    assert flags["--no-compile"].store_false and flags["--no-compile"].value == "true"
    assert flags["--compile-mode"].negative == "--no-compile-mode" and flags["--compile-mode"].value == "true"
    assert flags["--warmup"].value == "100" and flags["--warmup"].kind == "int"
    assert flags["--n-layers"].value == "4"
    assert "data" not in flags and "--help" not in flags
    _never_ran(tmp_path)


def test_short_alias_on_the_command_line(tmp_path: Path) -> None:
    script = _write(tmp_path, "train.py", ARGPARSE)
    flags = _by_flag(detect_flags(["python", str(script), "x", "-b", "4"], tmp_path))
    assert flags["--batch-size"].value == "4"
    _never_ran(tmp_path)


def test_parser_in_a_local_module_is_read_too(tmp_path: Path) -> None:
    _write(tmp_path, "args.py", ARGPARSE.replace('if __name__ == "__main__":\n    args = build_parser().parse_args()', ""))
    _write(tmp_path, "train.py", "from args import build_parser\nargs = build_parser().parse_args()\n")
    flags = _by_flag(detect_flags(["python", "train.py", "--lr", "0.1"], tmp_path))
    assert flags["--lr"].value == "0.1" and flags["--batch-size"].value == "32"
    _never_ran(tmp_path)


def test_click_options(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "clicky.py",
        """
        import click

        @click.command()
        @click.option("--batch-size", "-b", default=16, type=int, help="batch")
        @click.option("--amp/--no-amp", default=False)
        @click.option("--precision", type=click.Choice(["32", "bf16"]), default="32")
        @click.option("--gradient-checkpointing", is_flag=True)
        def main(batch_size, amp, precision, gradient_checkpointing):
            pass

        main()
        """,
    )
    flags = _by_flag(detect_flags(["python", "clicky.py", "-b", "8"], tmp_path))
    assert flags["--batch-size"].value == "8" and flags["--batch-size"].kind == "int" and flags["--batch-size"].source == "click"
    assert flags["--amp"].kind == "bool" and flags["--amp"].negative == "--no-amp" and flags["--amp"].value == "false"
    assert flags["--precision"].choices == ("32", "bf16")
    assert role_of(flags["--gradient-checkpointing"]) == "gradient_checkpointing"
    _never_ran(tmp_path)


def test_typer_parameters(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "typed.py",
        """
        from typing import Annotated
        import typer

        app = typer.Typer()

        @app.command()
        def main(data: str, batch_size: int = 16, amp: bool = False,
                 lr: Annotated[float, typer.Option("--learning-rate", help="lr")] = 1e-3,
                 steps: int = typer.Option(100, "--steps", "-s")):
            pass

        app()
        """,
    )
    flags = _by_flag(detect_flags(["python", "typed.py", "d", "--batch-size=4"], tmp_path))
    assert flags["--batch-size"].value == "4" and flags["--batch-size"].source == "typer"
    assert flags["--amp"].negative == "--no-amp"
    assert flags["--learning-rate"].kind == "float" and flags["--learning-rate"].value == "0.001"
    assert flags["--steps"].aliases == ("-s",) and flags["--steps"].value == "100"
    assert "--data" not in flags
    # the user spells valued flags with `=`, and typer takes that: added flags follow suit
    assert flags["--steps"].syntax == "equals"
    _never_ran(tmp_path)


HF = """
from dataclasses import dataclass, field
from transformers import HfArgumentParser, Trainer, TrainingArguments

@dataclass
class ModelArguments:
    model_name: str = field(default="gpt2", metadata={"help": "model to fine-tune"})
    lora_r: int = 8
    use_flash: bool = True

def main():
    parser = HfArgumentParser((ModelArguments, TrainingArguments))
    model_args, training_args = parser.parse_args_into_dataclasses()

main()
"""


def test_hf_argument_parser_dataclasses_and_training_arguments(tmp_path: Path) -> None:
    _write(tmp_path, "finetune.py", HF)
    cmd = ["python", "finetune.py", "--output_dir", "out", "--per_device_train_batch_size", "4", "--bf16"]
    flags = _by_flag(detect_flags(cmd, tmp_path))
    assert flags["--model_name"].value == "gpt2" and flags["--model_name"].help == "model to fine-tune"
    assert flags["--lora_r"].kind == "int" and role_of(flags["--lora_r"]) == "lora_rank"
    assert flags["--use_flash"].negative == "--no_use_flash"
    r = roles(list(flags.values()))
    assert r["batch_size"].flag == "--per_device_train_batch_size" and r["batch_size"].value == "4"
    assert r["gradient_accumulation"].flag == "--gradient_accumulation_steps" and r["gradient_accumulation"].value == "1"
    assert r["gradient_checkpointing"].flag == "--gradient_checkpointing"
    assert flags["--bf16"].value == "true" and flags["--fp16"].value == "false"
    assert {e.source for e in flags.values()} == {"hf"}
    _never_ran(tmp_path)


NANO = """
import os
out_dir = 'out'
eval_interval = 2000
gradient_accumulation_steps = 5 * 8  # used to simulate larger batch sizes
batch_size = 12
learning_rate = 6e-4
decay_lr = True
dtype = 'bfloat16' if os.environ.get("BF16") else 'float16'
_private = 1
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
exec(open('configurator.py').read())  # overrides from command line or config file
after_exec = 3
"""


def test_configurator_globals_are_equals_style_flags(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", NANO)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "small.py").write_text(MARK + "batch_size = 6\neval_interval = 250\n")
    flags = _by_flag(detect_flags(["python", "train.py", "config/small.py", "--batch_size=4"], tmp_path))
    assert set(flags) == {"--out_dir", "--eval_interval", "--gradient_accumulation_steps", "--batch_size", "--learning_rate", "--decay_lr", "--dtype"}
    assert all(e.syntax == "equals" and e.source == "configurator" for e in flags.values())
    assert flags["--batch_size"].value == "4"  # the command line wins over the config file
    assert flags["--eval_interval"].value == "250"  # from config/small.py, read as source
    assert flags["--gradient_accumulation_steps"].value == "40" and flags["--gradient_accumulation_steps"].kind == "int"
    assert flags["--learning_rate"].kind == "float"
    assert flags["--decay_lr"].kind == "bool" and flags["--decay_lr"].bool_values == ("True", "False") and flags["--decay_lr"].value == "true"
    assert flags["--dtype"].kind == "str" and flags["--dtype"].value is None  # known only at run time
    r = roles(list(flags.values()))
    assert r["batch_size"].flag == "--batch_size" and r["gradient_accumulation"].flag == "--gradient_accumulation_steps"
    _never_ran(tmp_path)


def test_a_script_without_a_parser_has_no_flags_and_needs_no_probe(tmp_path: Path) -> None:
    script = _write(tmp_path, "plain.py", "import sys\nbatch = int(sys.argv[1]) if len(sys.argv) > 1 else 4\nprint(batch)\n")
    scan = read_source_flags(script)
    assert scan.read and not scan.builds_parser and not scan.needs_probe
    assert detect_flags(["python", "plain.py", "8"], tmp_path) == []
    _never_ran(tmp_path)


def test_a_parser_the_source_cannot_spell_asks_for_a_probe(tmp_path: Path) -> None:
    script = _write(
        tmp_path,
        "dyn.py",
        """
        import argparse
        from helpers import add_model_args
        p = argparse.ArgumentParser()
        for name in ("lr", "wd"):
            p.add_argument(f"--{name}", type=float)
        add_model_args(p)
        """,
    )
    scan = read_source_flags(script)
    assert scan.builds_parser and scan.needs_probe
    assert any("add_argument at line" in u for u in scan.unreadable)
    assert any("passed to add_model_args" in u for u in scan.unreadable)
    assert detect_flags(["python", "dyn.py"], tmp_path, probe=False) == []
    _never_ran(tmp_path)


def test_hydra_overrides_on_the_command_line(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "app.py",
        """
        import hydra

        @hydra.main(config_path="conf", config_name="config", version_base=None)
        def main(cfg):
            pass

        main()
        """,
    )
    cmd = ["python", "app.py", "data.batch_size=32", "trainer.precision=32", "+trainer.accumulate_grad_batches=2", "model.compile=false"]
    flags = _by_flag(detect_flags(cmd, tmp_path))
    assert flags["data.batch_size"].syntax == "override" and flags["data.batch_size"].value == "32"
    assert flags["trainer.accumulate_grad_batches"].value == "2"
    assert flags["model.compile"].kind == "bool" and flags["model.compile"].bool_values == ("true", "false")
    assert roles(list(flags.values()))["batch_size"].flag == "data.batch_size"
    _never_ran(tmp_path)


def test_mingpt_style_dotted_overrides_on_the_command_line(tmp_path: Path) -> None:
    _write(tmp_path, "chargpt.py", "import sys\nfrom mingpt.utils import CfgNode\nconfig = CfgNode()\nconfig.merge_from_args(sys.argv[1:])\n")
    flags = _by_flag(detect_flags(["python", "chargpt.py", "--trainer.batch_size=32", "--model.n_layer=4"], tmp_path))
    assert flags["--trainer.batch_size"].syntax == "equals" and flags["--trainer.batch_size"].value == "32"
    assert roles(list(flags.values()))["batch_size"].flag == "--trainer.batch_size"
    _never_ran(tmp_path)


def test_pyproject_flags_from_cwd_upward(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.memtop.flags]
            batch_size = "--bsz"
            mixed_precision = { flag = "--precision", kind = "choice", choices = ["32", "bf16-mixed"], default = "32" }
            gradient_accumulation = { flag = "trainer.accumulate_grad_batches", kind = "int" }
            gradient_checkpointing = { flag = "--ckpt", kind = "bool", syntax = "equals", bool_values = ["yes", "no"] }
            """
        )
    )
    sub = tmp_path / "experiments" / "a"
    sub.mkdir(parents=True)
    flags = _by_flag(pyproject_flags(sub))
    assert flags["--bsz"].source == "pyproject" and flags["--bsz"].role == "batch_size" and flags["--bsz"].syntax == "space"
    assert flags["trainer.accumulate_grad_batches"].syntax == "override"
    assert flags["--ckpt"].syntax == "equals" and flags["--ckpt"].bool_values == ("yes", "no")
    r = roles(list(flags.values()))
    assert r["batch_size"].flag == "--bsz" and r["gradient_accumulation"].flag == "trainer.accumulate_grad_batches"


def test_pyproject_wins_and_declares_the_syntax(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", ARGPARSE)
    (tmp_path / "pyproject.toml").write_text('[tool.memtop.flags]\nsyntax = "equals"\nbatch_size = { flag = "--batch-size", kind = "int" }\n')
    entries = detect_flags(["python", "train.py", "d", "--batch-size", "6"], tmp_path)
    mine = [e for e in entries if e.flag == "--batch-size"]
    assert len(mine) == 1 and mine[0].source == "pyproject" and mine[0].value == "6"
    assert _by_flag(entries)["--lr"].syntax == "equals"  # the table-level syntax applies to detected flags
    _never_ran(tmp_path)


def test_launch_command_parsing() -> None:
    cases = {
        ("torchrun", "--nproc-per-node", "2", "--standalone", "train.py", "--lr", "1"): ("train.py", None, ["--lr", "1"]),
        ("python", "-m", "torch.distributed.run", "--nproc_per_node=2", "train.py", "-b", "3"): ("train.py", None, ["-b", "3"]),
        ("python", "-u", "-W", "ignore", "train.py"): ("train.py", None, []),
        ("accelerate", "launch", "--num_processes", "2", "train.py", "--amp"): ("train.py", None, ["--amp"]),
        ("deepspeed", "--num_gpus", "2", "train.py", "--x"): ("train.py", None, ["--x"]),
        ("python", "-m", "pkg.train", "--amp"): (None, "pkg.train", ["--amp"]),
        ("./train.py", "--amp"): ("./train.py", None, ["--amp"]),
        ("accelerate", "launch", "--multi_gpu", "--mixed_precision", "bf16", "train.py", "--x"): ("train.py", None, ["--x"]),
        ("python", "-c", "print(1)"): (None, None, []),
    }
    for cmd, (script, module, args) in cases.items():
        launch = parse_launch(list(cmd))
        assert (launch.script, launch.module, list(launch.args)) == (script, module, args), cmd
        assert [*launch.head, *launch.args] == list(cmd)
    assert parse_launch(["python", "-m", "pkg.train"]).name == "train"
    assert parse_launch([]).head == ()


def test_find_target_on_disk(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/__init__.py", "")
    _write(tmp_path, "pkg/train.py", ARGPARSE)
    t = find_target(["python", "-m", "pkg.train", "--amp"], tmp_path)
    assert t is not None and t.module == "pkg.train" and t.source_path == tmp_path / "pkg" / "train.py"
    assert find_target(["python", "missing.py"], tmp_path) is None
    assert find_target(["python", "x.py"], tmp_path / "no-such-dir") is None
    assert find_target(["python", "a" * 5000 + ".py"], tmp_path) is None  # ENAMETOOLONG is just "no script"
    shell = tmp_path / "run.sh"
    shell.write_text("#!/bin/sh\ntouch RAN\n")
    shell.chmod(0o755)
    assert find_target([str(shell), "--help"], tmp_path) is None
    assert detect_flags([str(shell), "--help"], tmp_path) == []
    flags = _by_flag(detect_flags(["python", "-m", "pkg.train", "--batch-size", "2"], tmp_path))
    assert flags["--batch-size"].value == "2"
    _never_ran(tmp_path)


def test_detection_never_raises(tmp_path: Path) -> None:
    assert detect_flags([], tmp_path) == []
    assert detect_flags(["python", "-c", "print(1)"], tmp_path) == []
    (tmp_path / "broken.py").write_text("def (:\n")
    assert detect_flags(["python", "broken.py"], tmp_path) == []
    (tmp_path / "deep.py").write_text("x = " + "(" * 5000 + "1" + ")" * 5000 + "\nexec(open('configurator.py').read())\n")
    assert detect_flags(["python", "deep.py"], tmp_path) == []


def test_flag_entries_round_trip_and_bad_entries_are_skipped() -> None:
    entry = FlagEntry(flag="--batch_size", kind="int", value="4", dest="batch_size", default="12", source="configurator", syntax="equals", bool_values=None, role="batch_size")
    assert flags_from_json(flags_to_json([entry])) == [entry]
    raw = [
        entry.to_json(),
        {"flag": "--amp", "kind": "bool", "value": True, "choices": "nope", "syntax": "weird", "aliases": ["--no-amp", 3, "a b"]},
        {"flag": ""},
        {"flag": "two words"},
        {"flag": "--"},
        {"kind": "int"},
        "text",
        None,
        {"flag": "--x", "value": 10**400, "default": float("nan"), "help": "h" * 10_000},
    ]
    got = flags_from_json(raw)
    assert [e.flag for e in got] == ["--batch_size", "--amp", "--x"]
    amp = got[1]
    assert amp.value == "true" and amp.choices is None and amp.syntax == "space" and amp.aliases == ("--no-amp",)  # a number is not a spelling
    assert got[2].value is None and got[2].default is None and len(got[2].help) <= 400
    assert flags_from_json("not a list") == [] and flags_from_json(None) == []
    assert entry.flag == "--batch_size" and entry.choices is None


def test_roles_of_sample_flags() -> None:
    def e(flag: str, kind: str, help: str = "", choices: tuple[str, ...] | None = None) -> FlagEntry:
        return FlagEntry(flag=flag, dest=flag.lstrip("-").replace("-", "_"), kind=kind, help=help, choices=choices)

    assert role_of(e("--batch-size", "int")) == "batch_size"
    assert role_of(e("--eval-batch-size", "int")) is None
    assert role_of(e("--gradient-accumulation-steps", "int")) == "gradient_accumulation"
    assert role_of(e("--amp", "bool")) == "mixed_precision"
    assert role_of(e("--dtype", "choice", "autocast dtype with --amp", ("bf16", "fp16", "fp32"))) == "amp_dtype"
    assert role_of(e("--optimize-memory", "bool", "store SH coefficients in fp16")) == "half_precision"
    assert role_of(e("--max-frames", "int")) == "frames"
    assert role_of(e("--fragmentation", "choice", "empty_cache policy", ("aggressive", "normal", "minimal"))) == "empty_cache"
    assert role_of(e("--seed", "int")) is None


def test_parse_argparse_help_text() -> None:
    text = textwrap.dedent(
        """
        usage: x [-h]

        options:
          -h, --help            show this help message and exit
          --max-frames MAX_FRAMES
                                input frames per clip (default: 8)
          --fragmentation {aggressive,normal,minimal}
                                empty_cache policy (default: normal)
          --use-amp             autocast the forward (default: False)
        """
    )
    flags = _by_flag(parse_help_text(text))
    assert flags["--max-frames"].value == "8" and flags["--max-frames"].kind == "int"
    assert flags["--fragmentation"].choices == ("aggressive", "normal", "minimal")
    assert flags["--use-amp"].kind == "bool" and flags["--use-amp"].value == "false"
    assert "--help" not in flags


def test_mutated_sources_never_raise_and_never_run(tmp_path: Path) -> None:
    """Seeded mutations of the scripts above (lines dropped, characters flipped): no exception."""
    import random

    rng = random.Random(11)
    sources = [ARGPARSE, HF, NANO]
    for i in range(80):
        lines = (MARK + rng.choice(sources)).splitlines()
        for _ in range(rng.randint(1, 4)):
            j = rng.randrange(len(lines))
            op = rng.random()
            if op < 0.4:
                del lines[j]
            elif op < 0.8 and lines[j]:
                k = rng.randrange(len(lines[j]))
                lines[j] = lines[j][:k] + rng.choice("()[]{}=,.:'\"*-x1 ") + lines[j][k + 1 :]
            else:
                lines.insert(j, lines[rng.randrange(len(lines))])
        script = tmp_path / f"m{i}.py"
        script.write_text("\n".join(lines))
        read_source_flags(script)
        assert isinstance(detect_flags(["python", script.name, "--batch-size", "3"], tmp_path, probe=False), list)
    _never_ran(tmp_path)
