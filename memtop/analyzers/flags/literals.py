"""Values read from source without running it: literals and constant arithmetic (``5 * 8``)."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}


def nodes_of(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree``, walked once and kept on the tree (each reader looks at all of them)."""
    cached: list[ast.AST] | None = getattr(tree, "_memtop_nodes", None)
    if cached is None:
        cached = list(ast.walk(tree))
        setattr(tree, "_memtop_nodes", cached)  # noqa: B010 - a cache on the parsed tree
    return cached


def calls_of(tree: ast.AST) -> list[ast.Call]:
    return [n for n in nodes_of(tree) if isinstance(n, ast.Call)]


class NotLiteral(Exception):
    """The expression needs the program to run (a call, a name, an environment lookup)."""


def literal(node: ast.AST | None) -> Any:
    """The value of a literal expression; raises :class:`NotLiteral` for anything else.

    Numbers, strings, bools, None, lists/tuples of those, unary minus and + - * / // between
    numbers. Nothing is evaluated beyond that (no names, no calls, no powers: no work to bound).
    """
    if node is None:
        raise NotLiteral("no expression")
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        if isinstance(node.value, str) and len(node.value) > 400:
            raise NotLiteral("long string")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = literal(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
        raise NotLiteral("unary on a non-number")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = literal(node.left), literal(node.right)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            if all(abs(v) < 1e15 for v in (left, right)):
                try:
                    return _BINOPS[type(node.op)](left, right)
                except ZeroDivisionError:
                    raise NotLiteral("division by zero") from None
        raise NotLiteral("arithmetic on non-numbers")
    if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) <= 64:
        return [literal(e) for e in node.elts]
    raise NotLiteral(type(node).__name__)


def literal_or(node: ast.AST | None, default: Any = None) -> Any:
    try:
        return literal(node)
    except (NotLiteral, RecursionError):
        return default


def kind_of(value: Any) -> str:
    """The flag kind a Python default implies."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def dotted(node: ast.AST) -> str:
    """``argparse.ArgumentParser`` for an attribute chain, ``x`` for a name, '' otherwise."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def last_name(node: ast.AST) -> str:
    """The last part of a dotted name (``ArgumentParser`` for ``argparse.ArgumentParser``)."""
    return dotted(node).rsplit(".", 1)[-1]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)
