"""nanoGPT-style configurator flags: module globals that ``exec(open('configurator.py').read())`` overrides.

The shape (nanoGPT's ``train.py``): simple module-level assignments (``batch_size = 12``), then
``exec(open('configurator.py').read())``, which reads ``sys.argv``: ``--key=value`` overrides a
global (the value goes through ``literal_eval`` and must keep the global's type: ``--compile=False``,
``--learning_rate=1.0``), a bare argument names a config file of more assignments. Only the
``=`` spelling works there, so every such flag has ``syntax="equals"``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from memtop.analyzers.flags.literals import NotLiteral, kind_of, literal
from memtop.runs.flag_entry import FlagEntry

CONFIG_BOOLS = ("True", "False")


def configurator_line(tree: ast.Module) -> int | None:
    """The line of a module-level ``exec(open("...config....py").read())``, or None."""
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
            continue
        call = stmt.value
        if not (isinstance(call.func, ast.Name) and call.func.id == "exec" and call.args):
            continue
        inner = call.args[0]
        # exec(open(NAME).read())
        if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) and inner.func.attr == "read":
            opened = inner.func.value
            if isinstance(opened, ast.Call) and isinstance(opened.func, ast.Name) and opened.func.id == "open" and opened.args:
                first = opened.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and "config" in Path(first.value).name:
                    return stmt.lineno
    return None


def read_configurator(tree: ast.Module) -> list[FlagEntry]:
    """Every simple module global assigned before the configurator's ``exec`` line, as ``--name=value``."""
    line = configurator_line(tree)
    if line is None:
        return []
    found: dict[str, FlagEntry] = {}
    for stmt in tree.body:
        if stmt.lineno >= line:
            break
        for name, value_node in _assignments(stmt):
            entry = _entry(name, value_node)
            if entry is not None:
                found[name] = entry
    return list(found.values())


def assigned_values(source: str) -> dict[str, str]:
    """``{name: value}`` of a config file's literal assignments (``python train.py config/x.py``)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return {}
    out: dict[str, str] = {}
    for stmt in tree.body:
        for name, node in _assignments(stmt):
            try:
                value = literal(node)
            except (NotLiteral, RecursionError):
                continue
            text = _config_text(value)
            if text is not None:
                out[name] = text
    return out


def _assignments(stmt: ast.stmt) -> list[tuple[str, ast.expr]]:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return [(stmt.targets[0].id, stmt.value)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return [(stmt.target.id, stmt.value)]
    return []


def _config_text(value: Any) -> str | None:
    """A global's value as the configurator reads it back (``True``, ``6e-4``, ``owt``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def _entry(name: str, node: ast.expr) -> FlagEntry | None:
    if name.startswith("_") or not name.isidentifier():
        return None
    try:
        value: Any = literal(node)
    except (NotLiteral, RecursionError):
        kind_and_help = _conditional(node)
        if kind_and_help is None:
            return None
        (kind, help_text), text = kind_and_help, None
    else:
        if not isinstance(value, (int, float, str, bool)):
            return None  # nanoGPT keeps only int, float, bool and str globals as config keys
        kind, text, help_text = kind_of(value), _config_text(value), ""
    return FlagEntry(
        flag=f"--{name}",
        kind=kind,
        value=text,
        dest=name,
        default=text,
        source="configurator",
        syntax="equals",
        bool_values=CONFIG_BOOLS if kind == "bool" else None,
        help=help_text,
    )


def _conditional(node: ast.expr) -> tuple[str, str] | None:
    """``'bfloat16' if cond else 'float16'``: a config key whose value is known only at run time;
    (its kind, a help text naming both values)."""
    if not isinstance(node, ast.IfExp):
        return None
    try:
        values = (literal(node.body), literal(node.orelse))
    except (NotLiteral, RecursionError):
        return None
    kinds = {kind_of(v) for v in values}
    if len(kinds) != 1 or not all(isinstance(v, (int, float, str, bool)) for v in values):
        return None
    return kinds.pop(), f"set at run time by the script: {values[0]!r} or {values[1]!r}"
