"""``[tool.memtop.flags]`` in the user's ``pyproject.toml``: flags and their syntax, in the user's words.

```toml
[tool.memtop.flags]
syntax = "equals"                      # how this script spells every flag: space | equals | override
batch_size = "--bsz"                   # role = flag
gradient_accumulation = { flag = "trainer.accumulate_grad_batches", kind = "int", default = 1 }
mixed_precision = { flag = "--amp", kind = "bool", syntax = "equals", bool_values = ["True", "False"] }
```

A role names what the flag controls (``batch_size``, ``gradient_accumulation``,
``mixed_precision``, ``amp_dtype``, ``gradient_checkpointing``, ``half_precision``, ``frames``,
``resolution``, ``empty_cache``, ``lora_rank``, ``num_layers``). A flag without leading dashes is a
``key=value`` override (Hydra style). The table-level ``syntax`` applies to every detected flag.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from memtop.runs.flag_entry import KINDS, SYNTAXES, FlagEntry, dest_of, kind_of_text, text_value

MAX_PYPROJECT_BYTES = 1 << 20


def find_pyproject(cwd: Path) -> Path | None:
    """The nearest ``pyproject.toml`` from ``cwd`` upward."""
    try:
        here = cwd.resolve()
        for d in (here, *here.parents):
            candidate = d / "pyproject.toml"
            if candidate.is_file():
                return candidate
    except (OSError, ValueError):
        return None
    return None


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # Python 3.10: the same parser, from PyPI
        try:
            import tomli as toml
        except ImportError:  # a dependency of memtop there; without it the table is not read
            return {}
    try:
        if path.stat().st_size > MAX_PYPROJECT_BYTES:
            return {}
        with open(path, "rb") as fh:
            data = toml.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _table(cwd: Path) -> dict[str, Any]:
    path = find_pyproject(cwd)
    if path is None:
        return {}
    tool = _load_toml(path).get("tool")
    memtop = tool.get("memtop") if isinstance(tool, dict) else None
    table = memtop.get("flags") if isinstance(memtop, dict) else None
    return table if isinstance(table, dict) else {}


def declared_syntax(cwd: Path) -> str | None:
    """The table-level ``syntax`` of ``[tool.memtop.flags]``, if the user declared one."""
    syntax = _table(cwd).get("syntax")
    return syntax if syntax in SYNTAXES else None


def pyproject_flags(cwd: Path) -> list[FlagEntry]:
    """The entries of ``[tool.memtop.flags]`` (each with its role). Never raises."""
    table = _table(cwd)
    default_syntax = table.get("syntax") if table.get("syntax") in SYNTAXES else None
    out: list[FlagEntry] = []
    for role, spec in table.items():
        if role == "syntax":
            continue
        entry = _entry(str(role), spec, default_syntax)
        if entry is not None:
            out.append(entry)
    return out


def _entry(role: str, spec: Any, default_syntax: str | None) -> FlagEntry | None:
    if isinstance(spec, str):
        spec = {"flag": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("flag"), str) or not spec["flag"].strip():
        return None
    flag = spec["flag"].strip()
    kind = spec.get("kind") if spec.get("kind") in KINDS else None
    choices = [str(c) for c in spec["choices"]] if isinstance(spec.get("choices"), list) else None
    default = text_value(spec.get("default"))
    if kind is None:
        kind = "choice" if choices else (kind_of_text(default) if default is not None else "str")
    syntax = spec.get("syntax") if spec.get("syntax") in SYNTAXES else default_syntax
    if syntax is None:
        syntax = "space" if flag.startswith("-") else "override"
    bools = spec.get("bool_values")
    bool_values = (str(bools[0]), str(bools[1])) if isinstance(bools, list) and len(bools) == 2 else None
    if kind == "bool" and bool_values is None and syntax == "override":
        bool_values = ("true", "false")
    value = default if default is not None else ("false" if kind == "bool" else None)
    return FlagEntry(
        flag=flag,
        kind=kind,
        value=value,
        dest=str(spec.get("dest") or dest_of(flag)),
        default=default,
        choices=tuple(choices) if choices else None,
        source="pyproject",
        syntax=syntax,
        bool_values=bool_values,
        help=str(spec.get("help") or ""),
        role=role,
    )
