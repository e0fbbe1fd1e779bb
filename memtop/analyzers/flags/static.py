"""Flags read from the training script's source with :mod:`ast`; nothing of the script runs.

The script and the modules it imports from its own directory (``from args import get_parser``)
are parsed; argparse, click/typer, ``HfArgumentParser`` dataclasses and a nanoGPT-style
configurator are recognised. ``unreadable`` lists what the source builds but cannot say
statically: only then may a ``--help`` probe run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from memtop.analyzers.flags.ast_argparse import read_argparse
from memtop.analyzers.flags.ast_click import read_click
from memtop.analyzers.flags.ast_configurator import read_configurator
from memtop.analyzers.flags.ast_hf import read_hf
from memtop.analyzers.flags.literals import last_name, nodes_of
from memtop.runs.flag_entry import FlagEntry

MAX_SOURCE_BYTES = 4 << 20  # a larger "script" is not hand-written training code
MAX_LOCAL_MODULES = 32


@dataclass
class SourceFlags:
    """What the source says: the flags, whether it builds a parser, and what it leaves unsaid."""

    entries: list[FlagEntry] = field(default_factory=list)
    builds_parser: bool = False
    unreadable: list[str] = field(default_factory=list)
    read: bool = False  # False when the source could not be read or parsed

    @property
    def needs_probe(self) -> bool:
        return self.builds_parser and bool(self.unreadable)


def read_source_text(path: Path) -> str | None:
    """The file's text, or None (unreadable, not a regular file, too large, not text)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_SOURCE_BYTES:
            return None
        with open(path, "rb") as fh:
            data = fh.read(MAX_SOURCE_BYTES + 1)
        return data.decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def _parse(path: Path) -> ast.Module | None:
    text = read_source_text(path)
    if text is None:
        return None
    try:
        return ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in nodes_of(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _local_module_files(tree: ast.Module, root: Path) -> list[Path]:
    """Files of modules imported from the script's own directory (``args.py``, ``cfg/__init__.py``)."""
    out: list[Path] = []
    for name in sorted(_imported_modules(tree)):
        base = root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            try:
                if candidate.is_file():
                    out.append(candidate)
                    break
            except (OSError, ValueError):
                continue
    return out[:MAX_LOCAL_MODULES]


def read_source_flags(path: Path) -> SourceFlags:
    """The flags the script at ``path`` (and its local modules) declares. Never raises."""
    try:
        return _read(path)
    except (RecursionError, MemoryError, OSError, ValueError):
        return SourceFlags()


def _read(path: Path) -> SourceFlags:
    tree = _parse(path)
    if tree is None:
        return SourceFlags()
    trees = [tree]
    for extra in _local_module_files(tree, path.parent):
        if extra.resolve() != path.resolve():
            parsed = _parse(extra)
            if parsed is not None:
                trees.append(parsed)
    functions = {n.name for t in trees for n in nodes_of(t) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    classes = {n.name: n for t in trees for n in nodes_of(t) if isinstance(n, ast.ClassDef) and _is_dataclass(n)}
    out = SourceFlags(read=True)
    seen: set[str] = set()

    def add(entries: list[FlagEntry]) -> None:
        for e in entries:
            if e.flag not in seen:
                seen.add(e.flag)
                out.entries.append(e)

    for t in trees:
        imports = {m.split(".", 1)[0] for m in _imported_modules(t)}
        hf = read_hf(t, classes)
        add(hf.entries)
        argparse_scan = read_argparse(t, functions)
        add(argparse_scan.entries)
        click_scan = read_click(t, imports)
        add(click_scan.entries)
        out.builds_parser |= hf.builds_parser or argparse_scan.builds_parser or click_scan.builds_parser
        # HfArgumentParser is an argparse parser: its own parse calls are not "handing it away".
        out.unreadable += hf.unreadable + click_scan.unreadable
        out.unreadable += [u for u in argparse_scan.unreadable if not (hf.builds_parser and "is passed to" in u)]
    configurator = read_configurator(tree)
    if configurator:
        out.builds_parser = True
        add(configurator)
    return out


def _is_dataclass(cls: ast.ClassDef) -> bool:
    return any(last_name(d.func if isinstance(d, ast.Call) else d) == "dataclass" for d in cls.decorator_list)
