"""click and typer options read from the script's source.

click: ``@click.option("--batch-size", "-b", default=32, type=int)``, ``"--amp/--no-amp"``,
``is_flag=True``, ``type=click.Choice([...])``. typer: the parameters of a command function
(``@app.command()`` or ``typer.run(main)``): a parameter with a default is ``--name-with-dashes``,
a bool one is ``--x/--no-x``, ``typer.Option(default, "--decl", ...)`` and ``Annotated[...]`` too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from memtop.analyzers.flags.literals import (
    NotLiteral,
    calls_of,
    dotted,
    keyword,
    kind_of,
    last_name,
    literal,
    literal_or,
    nodes_of,
)
from memtop.runs.flag_entry import FlagEntry, dest_of, text_value

_TYPES = {"int": "int", "INT": "int", "float": "float", "FLOAT": "float", "str": "str", "STRING": "str", "bool": "bool", "BOOL": "bool"}


@dataclass
class ClickScan:
    entries: list[FlagEntry] = field(default_factory=list)
    builds_parser: bool = False
    unreadable: list[str] = field(default_factory=list)


def read_click(tree: ast.Module, imports: set[str]) -> ClickScan:
    scan = ClickScan()
    uses_click = "click" in imports
    uses_typer = "typer" in imports
    if not (uses_click or uses_typer):
        return scan
    functions = {n.name: n for n in nodes_of(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    typer_commands: set[str] = set()
    for fn in functions.values():
        for deco in fn.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            name = last_name(call.func if call is not None else deco)
            if uses_click and name in ("option", "argument", "command", "group") and _is_click(call.func if call else deco):
                scan.builds_parser = True
                if name == "option" and call is not None:
                    _add(scan, lambda c=call: _click_option(c), call.lineno)
            elif uses_typer and name in ("command", "callback"):
                typer_commands.add(fn.name)
    if uses_typer:
        for call in calls_of(tree):
            if dotted(call.func) == "typer.run" and call.args and isinstance(call.args[0], ast.Name):
                typer_commands.add(call.args[0].id)
        for name in sorted(typer_commands):
            if name in functions:
                scan.builds_parser = True
                for param, default in _params(functions[name]):
                    _add(scan, lambda p=param, d=default: _typer_param(p, d), param.lineno)
    return scan


def _add(scan: ClickScan, make: Any, line: int) -> None:
    try:
        entry = make()
    except NotLiteral as exc:
        scan.unreadable.append(f"option at line {line}: {exc}")
        return
    if entry is not None:
        scan.entries.append(entry)


def _is_click(node: ast.AST) -> bool:
    d = dotted(node)
    return d.startswith("click.") or "." not in d


def _decls(strings: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(dest, options, negative options) from click-style declarations (``"--amp/--no-amp"``)."""
    dest: str | None = None
    options: list[str] = []
    negatives: list[str] = []
    for s in strings:
        if not s.startswith("-"):
            dest = s
            continue
        on, _, off = s.partition("/")
        options.append(on.strip())
        if off.strip():
            negatives.append(off.strip())
    return dest, options, negatives


def _click_option(call: ast.Call) -> FlagEntry | None:
    strings = [literal(a) for a in call.args]
    if not all(isinstance(s, str) for s in strings):
        raise NotLiteral("an option name that is not a string")
    dest, options, negatives = _decls([str(s) for s in strings])
    if not options:
        return None
    is_flag = literal_or(keyword(call, "is_flag")) is True or bool(negatives)
    default = literal_or(keyword(call, "default"))
    type_node = keyword(call, "type")
    help_text = literal_or(keyword(call, "help"))
    return _make(options, negatives, dest, default, type_node, is_flag, help_text, "click")


def _make(options: list[str], negatives: list[str], dest: str | None, default: Any, type_node: ast.expr | None, is_flag: bool, help_text: Any, source: str) -> FlagEntry:
    longs = [o for o in options if o.startswith("--")]
    flag = longs[0] if longs else options[0]
    aliases = tuple(o for o in [*options, *negatives] if o != flag)
    choices: tuple[str, ...] | None = None
    if type_node is not None and isinstance(type_node, ast.Call) and last_name(type_node.func) == "Choice" and type_node.args:
        raw = literal_or(type_node.args[0])
        choices = tuple(str(c) for c in raw) if isinstance(raw, list) else None
    if is_flag:
        kind = "bool"
        default = bool(default) if default is not None else False
    elif choices is not None:
        kind = "choice"
    elif type_node is not None and last_name(type_node) in _TYPES:
        kind = _TYPES[last_name(type_node)]
    else:
        kind = kind_of(default) if default is not None else "str"
    value = text_value(default)
    return FlagEntry(
        flag=flag,
        kind=kind,
        value=value,
        dest=dest or dest_of(flag),
        default=value,
        choices=choices,
        source=source,
        aliases=aliases,
        help=help_text if isinstance(help_text, str) else "",
    )


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[ast.arg, ast.expr | None]]:
    """Each parameter with its default expression (None when it has none)."""
    args = [*fn.args.posonlyargs, *fn.args.args]
    defaults: list[ast.expr | None] = [None] * (len(args) - len(fn.args.defaults)) + list(fn.args.defaults)
    pairs = list(zip(args, defaults, strict=True))
    pairs += list(zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True))
    return pairs


def _typer_info(node: ast.expr | None) -> ast.Call | None:
    if isinstance(node, ast.Call) and last_name(node.func) in ("Option", "Argument"):
        return node
    return None


def _typer_param(param: ast.arg, default_node: ast.expr | None) -> FlagEntry | None:
    info = _typer_info(default_node)
    annotation = param.annotation
    if isinstance(annotation, ast.Subscript) and last_name(annotation.value) == "Annotated":
        parts = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        annotation = parts[0]
        info = info or next((i for i in (_typer_info(p) for p in parts[1:]) if i is not None), None)
    if info is not None and last_name(info.func) == "Argument":
        return None
    if info is None and default_node is None:
        return None  # a plain parameter without a default is a positional argument
    decls: list[str] = []
    default: Any = None
    if info is not None:
        positional = [literal(a) for a in info.args if not (isinstance(a, ast.Constant) and a.value is Ellipsis)]
        if positional and not (isinstance(positional[0], str) and positional[0].startswith("-")):
            default = positional.pop(0)
        decls = [str(p) for p in positional if isinstance(p, str)]
        if keyword(info, "default") is not None:
            default = literal_or(keyword(info, "default"))
        help_text = literal_or(keyword(info, "help"))
        if default_node is not None and info is not default_node:
            default = literal_or(default_node)
    else:
        default = literal(default_node)
        help_text = None
    type_name = last_name(annotation) if annotation is not None else ""
    is_bool = type_name == "bool" or isinstance(default, bool)
    dest, options, negatives = _decls(decls)
    if not options:
        options = ["--" + param.arg.replace("_", "-")]
    if is_bool and not negatives:
        negatives = ["--no-" + options[0].lstrip("-")]
    type_node = annotation if type_name in _TYPES else None
    return _make(options, negatives, dest or param.arg, default, type_node, is_bool, help_text, "typer")
