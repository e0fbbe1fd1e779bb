"""Flag detection: the script's own --help (argparse actions or help text) and [tool.memtop.flags]."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from memtop.analyzers import cmdline
from memtop.analyzers.flags import apply_command_values, detect_flags, find_target, parse_help_text, pyproject_flags
from memtop.analyzers.roles import role_of, roles

TRAIN_SCRIPT = textwrap.dedent(
    """
    import argparse, pathlib, sys
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", "-b", type=int, default=32, help="per-device batch")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--amp", action="store_true", help="autocast")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="autocast dtype with --amp")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--name", default="x")
    args = p.parse_args()
    pathlib.Path("SIDE_EFFECT").write_text("the script ran past parse_args")
    """
)


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(TRAIN_SCRIPT)
    return path


def _by_flag(entries: list[dict]) -> dict[str, dict]:
    return {e["flag"]: e for e in entries}


def test_argparse_flags_with_values_and_no_side_effects(script: Path) -> None:
    entries = detect_flags(["python", "train.py", "--batch-size", "8", "--amp", "--dtype=fp16"], script.parent)
    flags = _by_flag(entries)
    assert flags["--batch-size"] == flags["--batch-size"] | {"value": "8", "dest": "batch_size", "kind": "int", "source": "argparse", "default": "32"}
    assert flags["--batch-size"]["aliases"] == ["-b"]
    assert flags["--gradient-accumulation-steps"]["value"] == "1"
    assert flags["--lr"]["kind"] == "float"
    assert flags["--amp"]["kind"] == "bool" and flags["--amp"]["value"] == "true"
    assert flags["--dtype"]["kind"] == "choice" and flags["--dtype"]["choices"] == ["bf16", "fp16", "fp32"]
    assert flags["--dtype"]["value"] == "fp16"
    assert flags["--no-compile"]["store_false"] is True
    assert "--help" not in flags
    # the probe stops at parse_args and writes no bytecode next to the script
    assert not (script.parent / "SIDE_EFFECT").exists()
    assert not (script.parent / "__pycache__").exists()


def test_short_alias_on_command_line(script: Path) -> None:
    flags = _by_flag(detect_flags([sys.executable, str(script), "-b", "4"], script.parent))
    assert flags["--batch-size"]["value"] == "4"


def test_torchrun_and_module_targets(tmp_path: Path, script: Path) -> None:
    t = find_target(["torchrun", "--nproc-per-node", "2", "--standalone", "train.py", "--lr", "1"], script.parent)
    assert t is not None and t.script == script and t.args == ["--lr", "1"]
    t = find_target(["python", "-m", "torch.distributed.run", "--nproc_per_node=2", "train.py", "-b", "3"], script.parent)
    assert t is not None and t.script == script and t.args == ["-b", "3"]
    t = find_target(["python", "-u", "-W", "ignore", "train.py"], script.parent)
    assert t is not None and t.script == script
    t = find_target(["accelerate", "launch", "--num_processes", "2", "train.py", "--amp"], script.parent)
    assert t is not None and t.script == script and t.args == ["--amp"]
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(TRAIN_SCRIPT)
    t = find_target(["python", "-m", "pkg.train", "--amp"], tmp_path)
    assert t is not None and t.module == "pkg.train" and t.args == ["--amp"]
    flags = _by_flag(detect_flags(["python", "-m", "pkg.train", "--batch-size", "2"], tmp_path))
    assert flags["--batch-size"]["value"] == "2"
    assert not (tmp_path / "SIDE_EFFECT").exists()


def test_no_script_never_raises(tmp_path: Path) -> None:
    assert detect_flags([], tmp_path) == []
    assert detect_flags(["python", "missing.py"], tmp_path) == []
    assert detect_flags(["python", "-c", "print(1)"], tmp_path) == []
    assert detect_flags(["bash", "run.sh"], tmp_path) == []
    assert detect_flags(["python", "x.py"], tmp_path / "no-such-dir") == []
    shell = tmp_path / "run.sh"
    shell.write_text("#!/bin/sh\ntouch RAN\n")
    shell.chmod(0o755)
    assert detect_flags([str(shell), "--help"], tmp_path) == []
    assert not (tmp_path / "RAN").exists()


def test_timeout_kills_the_probe(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(60)\n")
    t0 = time.monotonic()
    assert detect_flags(["python", "slow.py"], tmp_path, timeout=1.0) == []
    assert time.monotonic() - t0 < 10


def test_help_text_fallback_for_non_argparse_scripts(tmp_path: Path) -> None:
    (tmp_path / "clicky.py").write_text(
        textwrap.dedent(
            '''
            import sys
            if "--help" in sys.argv:
                print("""Usage: clicky.py [OPTIONS]

            Options:
              --batch-size INTEGER     batch  [default: 16]
              --precision [32|bf16]    precision
              --use-amp                mixed precision
              --help                   Show this message and exit.
            """)
                sys.exit(0)
            '''
        )
    )
    flags = _by_flag(detect_flags(["python", "clicky.py"], tmp_path))
    assert flags["--batch-size"]["value"] == "16" and flags["--batch-size"]["kind"] == "int"
    assert flags["--use-amp"]["kind"] == "bool"


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
    assert flags["--max-frames"]["value"] == "8" and flags["--max-frames"]["kind"] == "int"
    assert flags["--fragmentation"]["choices"] == ["aggressive", "normal", "minimal"]
    assert flags["--use-amp"] == flags["--use-amp"] | {"kind": "bool", "value": "false"}


def test_pyproject_flags_from_cwd_upward(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.memtop.flags]
            batch_size = "--bsz"
            mixed_precision = { flag = "--precision", kind = "choice", choices = ["32", "bf16-mixed"], default = "32" }
            gradient_accumulation = "trainer.accumulate_grad_batches"
            """
        )
    )
    sub = tmp_path / "experiments" / "a"
    sub.mkdir(parents=True)
    entries = pyproject_flags(sub)
    flags = _by_flag(entries)
    assert flags["--bsz"]["source"] == "pyproject" and flags["--bsz"]["role"] == "batch_size"
    apply_command_values(entries, ["--bsz", "12", "trainer.accumulate_grad_batches=4"])
    assert flags["--bsz"]["value"] == "12"
    assert flags["trainer.accumulate_grad_batches"]["value"] == "4"
    r = roles(entries)
    assert r["batch_size"]["flag"] == "--bsz" and r["gradient_accumulation"]["flag"] == "trainer.accumulate_grad_batches"
    # a Hydra-style override is rewritten as key=value
    assert cmdline.set_value(["trainer.accumulate_grad_batches=4"], flags["trainer.accumulate_grad_batches"], "8") == ["trainer.accumulate_grad_batches=8"]


def test_pyproject_overrides_argparse(tmp_path: Path, script: Path) -> None:
    (script.parent / "pyproject.toml").write_text('[tool.memtop.flags]\nbatch_size = { flag = "--batch-size", kind = "int" }\n')
    entries = detect_flags(["python", "train.py", "--batch-size", "6"], script.parent)
    mine = [e for e in entries if e["flag"] == "--batch-size"]
    assert len(mine) == 1 and mine[0]["source"] == "pyproject" and mine[0]["value"] == "6"


def test_roles_of_sample_flags() -> None:
    def e(flag: str, kind: str, help: str = "", choices: list[str] | None = None) -> dict:
        return {"flag": flag, "dest": flag.lstrip("-").replace("-", "_"), "kind": kind, "help": help, "choices": choices}

    assert role_of(e("--batch-size", "int")) == "batch_size"
    assert role_of(e("--eval-batch-size", "int")) is None
    assert role_of(e("--gradient-accumulation-steps", "int")) == "gradient_accumulation"
    assert role_of(e("--amp", "bool")) == "mixed_precision"
    assert role_of(e("--use-amp", "bool")) == "mixed_precision"
    assert role_of(e("--dtype", "choice", "autocast dtype with --amp", ["bf16", "fp16", "fp32"])) == "amp_dtype"
    assert role_of(e("--gradient-checkpointing", "bool")) == "gradient_checkpointing"
    assert role_of(e("--optimize-memory", "bool", "store SH coefficients in fp16")) == "half_precision"
    assert role_of(e("--max-frames", "int")) == "frames"
    assert role_of(e("--resolution", "int")) == "resolution"
    assert role_of(e("--fragmentation", "choice", "empty_cache policy", ["aggressive", "normal", "minimal"])) == "empty_cache"
    assert role_of(e("--lora-r", "int")) == "lora_rank"
    assert role_of(e("--n-layers", "int")) == "num_layers"
    assert role_of(e("--views", "int")) is None
    assert role_of(e("--seed", "int")) is None


def test_cmdline_edits() -> None:
    bs = {"flag": "--batch-size", "aliases": ["-b"], "kind": "int"}
    assert cmdline.set_value(["--batch-size", "8", "--lr", "1"], bs, "4") == ["--batch-size", "4", "--lr", "1"]
    assert cmdline.set_value(["--batch-size=8"], bs, "4") == ["--batch-size=4"]
    assert cmdline.set_value(["-b", "8"], bs, "4") == ["-b", "4"]
    assert cmdline.set_value(["--lr", "1"], bs, "4") == ["--lr", "1", "--batch-size", "4"]
    amp = {"flag": "--amp", "aliases": [], "kind": "bool", "default": "false"}
    assert cmdline.set_bool(["--lr", "1"], amp, True) == ["--lr", "1", "--amp"]
    assert cmdline.set_bool(["--amp", "--lr", "1"], amp, False) == ["--lr", "1"]
    opt = {"flag": "--compile", "aliases": ["--no-compile"], "kind": "bool", "default": "true"}
    assert cmdline.set_bool(["--lr", "1"], opt, False) == ["--lr", "1", "--no-compile"]
    assert cmdline.set_bool(["--no-compile"], opt, True) == []
    head, args = cmdline.split_command(["torchrun", "--nproc-per-node", "2", "t.py", "--x", "1"])
    assert head == ["torchrun", "--nproc-per-node", "2", "t.py"] and args == ["--x", "1"]
