"""argparse flags read from the script's source: every ``add_argument`` call with literal option names.

Parsers built inside functions count too (the whole module is walked). What the source cannot
say statically (option names computed at run time, ``**kwargs``, a parser handed to a function
defined elsewhere) is reported as ``unreadable``, which is what allows a ``--help`` probe.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from memtop.analyzers.flags.literals import (
    NotLiteral,
    calls_of,
    dotted,
    kind_of,
    last_name,
    literal,
    literal_or,
    nodes_of,
)
from memtop.runs.flag_entry import FlagEntry, dest_of, text_value

_TYPES = {"int": "int", "float": "float", "str": "str", "bool": "str"}
_SWITCH_ACTIONS = {"store_true", "store_false", "store_const", "count"}


@dataclass
class ArgparseScan:
    entries: list[FlagEntry] = field(default_factory=list)
    builds_parser: bool = False
    unreadable: list[str] = field(default_factory=list)


def read_argparse(tree: ast.Module, local_functions: set[str]) -> ArgparseScan:
    scan = ArgparseScan()
    parsers: set[str] = set()
    defaults: dict[str, object] = {}
    calls = calls_of(tree)
    for call in calls:
        name = last_name(call.func)
        if name == "ArgumentParser":
            scan.builds_parser = True
        if isinstance(call.func, ast.Attribute) and call.func.attr == "set_defaults":
            for k in call.keywords:
                if k.arg:
                    defaults[k.arg] = literal_or(k.value)
    for node in nodes_of(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if last_name(node.value.func) in ("ArgumentParser", "add_argument_group", "add_mutually_exclusive_group"):
                parsers.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for call in calls:
        if isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument":
            scan.builds_parser = True
            try:
                entry = _entry(call)
            except NotLiteral as exc:
                scan.unreadable.append(f"add_argument at line {call.lineno}: {exc}")
                continue
            if entry is not None:
                scan.entries.append(entry)
        elif parsers and _hands_parser_away(call, parsers, local_functions):
            scan.unreadable.append(f"the parser is passed to {dotted(call.func) or 'a function'} at line {call.lineno}")
    if defaults:
        scan.entries = [_with_default(e, defaults) for e in scan.entries]
    return scan


def _hands_parser_away(call: ast.Call, parsers: set[str], local_functions: set[str]) -> bool:
    """``add_model_args(parser)``: options are added by code that is not in this file."""
    if isinstance(call.func, ast.Attribute) and dotted(call.func.value) in parsers:
        return False  # parser.parse_args(), parser.add_argument_group(), ...
    if last_name(call.func) in local_functions:
        return False  # defined here: its add_argument calls are read too
    args = [*call.args, *(k.value for k in call.keywords)]
    return any(isinstance(a, ast.Name) and a.id in parsers for a in args)


def _entry(call: ast.Call) -> FlagEntry | None:
    if any(k.arg is None for k in call.keywords):
        raise NotLiteral("**kwargs")
    names: list[str] = []
    for a in call.args:
        if isinstance(a, ast.Starred):
            raise NotLiteral("*names")
        v = literal(a)
        if not isinstance(v, str):
            raise NotLiteral("a name that is not a string")
        names.append(v)
    options = [n for n in names if n.startswith("-")]
    if not options:
        return None  # a positional argument: not a flag
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    action_node = kw.get("action")
    action = literal_or(action_node) if action_node is not None else "store"
    boolean_optional = action_node is not None and last_name(action_node) == "BooleanOptionalAction"
    default = literal_or(kw.get("default"))
    choices_raw = literal_or(kw.get("choices"))
    choices = tuple(str(c) for c in choices_raw) if isinstance(choices_raw, list) else None
    longs = [o for o in options if o.startswith("--")]
    flag = longs[0] if longs else options[0]
    aliases = [o for o in options if o != flag]
    dest = literal_or(kw.get("dest"))
    dest = dest if isinstance(dest, str) else dest_of(flag)
    help_text = literal_or(kw.get("help"))
    store_false = action == "store_false"
    if boolean_optional or action in _SWITCH_ACTIONS:
        kind = "bool" if action != "count" else "int"
        if action == "store_true" and default is None:
            default = False
        if store_false and default is None:
            default = True
        if boolean_optional:
            aliases += [f"--no-{o[2:]}" for o in longs]
        value = text_value(default)
        return FlagEntry(flag=flag, kind=kind, value=value, dest=dest, default=value, source="argparse", aliases=tuple(aliases), store_false=store_false, help=help_text if isinstance(help_text, str) else "")
    if choices is not None:
        kind = "choice"
    else:
        kind = _kind(kw.get("type"), default)
    value = text_value(default)
    return FlagEntry(flag=flag, kind=kind, value=value, dest=dest, default=value, choices=choices, source="argparse", aliases=tuple(aliases), help=help_text if isinstance(help_text, str) else "")


def _kind(type_node: ast.expr | None, default: object) -> str:
    """``type=int`` -> int; ``type=positive_int`` -> int; an unknown type -> the default's kind."""
    name = last_name(type_node) if type_node is not None else ""
    if name in _TYPES:
        return _TYPES[name]
    for word in ("int", "float"):
        if name.lower().endswith(word):
            return word
    kind = kind_of(default) if default is not None else "str"
    return "str" if kind == "bool" else kind


def _with_default(entry: FlagEntry, defaults: dict[str, object]) -> FlagEntry:
    if entry.dest not in defaults or defaults[entry.dest] is None:
        return entry
    value = text_value(defaults[entry.dest])
    return entry.replace(value=value, default=value)
