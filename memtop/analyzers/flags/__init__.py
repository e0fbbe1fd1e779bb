"""The training script's own flags, detected once at ``memtop train`` launch and stored in ``meta.json``.

Modules by source: :mod:`.launch` (the one launch-command parser), :mod:`.static` with the
``ast_*`` readers (argparse, click/typer, ``HfArgumentParser``, nanoGPT-style configurator),
:mod:`.probe` and :mod:`.helptext` (the ``--help`` probe, a last resort), :mod:`.pyproject`
(``[tool.memtop.flags]``), :mod:`.values` (current values and the user's spelling) and
:mod:`.render` (a changed command line in the user's syntax).
"""

from memtop.analyzers.flags.detect import FlagDetection, detect_flags
from memtop.analyzers.flags.helptext import parse_help_text
from memtop.analyzers.flags.launch import Launch, Target, find_target, parse_launch, split_command
from memtop.analyzers.flags.probe import live_probes, stop_probes
from memtop.analyzers.flags.pyproject import find_pyproject, pyproject_flags
from memtop.analyzers.flags.render import apply_flag_changes, join, set_bool, set_value
from memtop.analyzers.flags.static import read_source_flags
from memtop.analyzers.flags.values import apply_command_values
from memtop.runs.flag_entry import KINDS, SYNTAXES, FlagEntry, flags_from_json, flags_to_json

format_command = join

__all__ = [
    "KINDS",
    "SYNTAXES",
    "FlagDetection",
    "FlagEntry",
    "Launch",
    "Target",
    "apply_command_values",
    "apply_flag_changes",
    "detect_flags",
    "find_pyproject",
    "find_target",
    "flags_from_json",
    "flags_to_json",
    "format_command",
    "join",
    "live_probes",
    "parse_help_text",
    "parse_launch",
    "pyproject_flags",
    "read_source_flags",
    "set_bool",
    "set_value",
    "split_command",
    "stop_probes",
]
