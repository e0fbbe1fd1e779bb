"""Where memtop's own options end and the training command begins (argparse ``REMAINDER``)."""

from __future__ import annotations

import sys

import pytest

from memtop.cli import build_parser
from memtop.commands.child_command import child_command


def _parse(verb: str, *words: str) -> tuple[dict[str, object], list[str]]:
    args = build_parser(verb).parse_args([verb, *words])
    own = {k: v for k, v in vars(args).items() if k != "child"}
    return own, child_command(args.child)


def test_the_command_starts_at_the_script_and_keeps_options_that_look_like_memtops() -> None:
    own, child = _parse("train", "--name", "x", "--max-steps", "3", "train.py", "--name", "y", "--max-steps=9")
    assert own["name"] == "x" and own["max_steps"] == 3
    assert child == [sys.executable, "train.py", "--name", "y", "--max-steps=9"]


def test_after_a_double_dash_everything_is_the_command() -> None:
    own, child = _parse("train", "--no-tui", "--", "torchrun", "--nproc_per_node", "2", "t.py", "--", "x")
    assert own["no_tui"] is True
    assert child == ["torchrun", "--nproc_per_node", "2", "t.py", "--", "x"]
    _, child = _parse("fit", "--vary", "batch_size=1,2,4", "--", "-weird", "--json")
    assert child == ["-weird", "--json"]


def test_fit_options_with_values_and_the_script() -> None:
    own, child = _parse("fit", "--steps", "2", "--at", "64", "--device-memory", "24GB", "fit_train.py", "--batch-size", "8")
    assert own["steps"] == 2 and own["at"] == ["64"] and own["device_memory"] == 24 << 30
    assert child == [sys.executable, "fit_train.py", "--batch-size", "8"]


def test_no_command_is_an_empty_list_and_an_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    _, child = _parse("train", "--no-tui")
    assert child == []
    with pytest.raises(SystemExit) as exc:
        build_parser("train").parse_args(["train", "--bogus", "train.py"])
    assert exc.value.code == 2 and "--bogus" in capsys.readouterr().err
