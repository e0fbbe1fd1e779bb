"""The ``memtop`` command line: parse, dispatch to the verb's module, map errors to exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from memtop.commands import COMMANDS, load
from memtop.commands.child_command import child_command
from memtop.errors import MemtopError
from memtop.version import __version__


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"memtop: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``verb``'s module is imported (to add its options), so the CLI starts fast."""
    parser = _Parser(prog="memtop", description="Where did my GPU memory go, and which flag do I change?")
    parser.add_argument("--version", action="version", version=f"memtop {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == verb:
            load(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb if verb in {name for name, _, _ in COMMANDS} else None)
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    if isinstance(getattr(args, "child", None), list):  # `train`, `fit`: the command, verbatim
        args.child = child_command(args.child)
    try:
        return int(load(args._module).run(args))
    except MemtopError as exc:
        sys.stderr.write(f"memtop: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
