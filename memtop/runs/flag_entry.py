"""One detected flag of the training script, and its form in ``meta.json`` (``detected_flags``).

The entry records not only what the flag is (kind, default, choices) but how it is spelled on a
command line (``syntax``), so a suggested command is written the way the script accepts it:
nanoGPT's configurator crashes on ``--batch_size 4`` and a Hydra app on ``--batch_size=4``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KINDS = ("int", "float", "bool", "choice", "str")
# How a value is written: `--flag VALUE`, `--flag=VALUE`, or `key=VALUE` (a Hydra-style override).
SYNTAXES = ("space", "equals", "override")
SOURCES = ("argparse", "click", "typer", "hf", "configurator", "help", "pyproject", "command")

_MAX_TEXT = 400  # a stored string longer than this is cut: meta.json is read by every verb
_MAX_LIST = 64


@dataclass(frozen=True)
class FlagEntry:
    """A flag the script accepts, with its current value on the launch command.

    ``syntax`` is how a value is spelled (see :data:`SYNTAXES`); ``bool_values`` is ``None`` for a
    switch (``--amp`` / ``--no-amp``) and ``(on, off)`` for a bool that takes a value
    (``--compile=False`` for a configurator, ``amp=true`` for an override).
    """

    flag: str
    kind: str = "str"
    value: str | None = None
    dest: str = ""
    default: str | None = None
    choices: tuple[str, ...] | None = None
    source: str = "argparse"
    syntax: str = "space"
    aliases: tuple[str, ...] = ()
    store_false: bool = False
    bool_values: tuple[str, str] | None = None
    help: str = ""
    role: str | None = None

    @property
    def options(self) -> tuple[str, ...]:
        """Every spelling of the option (the flag first)."""
        return (self.flag, *self.aliases)

    @property
    def is_override(self) -> bool:
        return self.syntax == "override" or not self.flag.startswith("-")

    @property
    def negative(self) -> str | None:
        """The ``--no-…`` spelling that turns a switch off, if the script has one."""
        return next((a for a in self.aliases if a.startswith("--no-") or a.startswith("--no_")), None)

    def replace(self, **changes: Any) -> FlagEntry:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flag": self.flag,
            "value": self.value,
            "dest": self.dest,
            "kind": self.kind,
            "choices": list(self.choices) if self.choices is not None else None,
            "source": self.source,
            "syntax": self.syntax,
            "default": self.default,
            "aliases": list(self.aliases),
            "store_false": self.store_false,
            "help": self.help,
        }
        if self.bool_values is not None:
            out["bool_values"] = list(self.bool_values)
        if self.role is not None:
            out["role"] = self.role
        return out

    @classmethod
    def from_json(cls, raw: object) -> FlagEntry | None:
        """An entry from ``meta.json``; None for anything that is not one (never raises)."""
        if not isinstance(raw, dict):
            return None
        flag = _text(raw.get("flag"))
        if not flag or any(c.isspace() for c in flag) or flag.strip("-") == "" or flag.startswith("---"):
            return None
        kind = raw.get("kind") if raw.get("kind") in KINDS else "str"
        syntax = raw.get("syntax") if raw.get("syntax") in SYNTAXES else ("space" if flag.startswith("-") else "override")
        source = _text(raw.get("source")) or "argparse"
        choices = _texts(raw.get("choices"))
        bool_values = _texts(raw.get("bool_values"))
        return cls(
            flag=flag,
            kind=str(kind),
            value=_value(raw.get("value")),
            dest=_text(raw.get("dest")) or dest_of(flag),
            default=_value(raw.get("default")),
            choices=choices,
            source=source,
            syntax=str(syntax),
            aliases=tuple(a for a in _strs(raw.get("aliases")) if a and not any(c.isspace() for c in a)),
            store_false=raw.get("store_false") is True,
            bool_values=(bool_values[0], bool_values[1]) if bool_values is not None and len(bool_values) == 2 else None,
            help=_text(raw.get("help")) or "",
            role=_text(raw.get("role")),
        )


def dest_of(flag: str) -> str:
    """``--batch-size`` -> ``batch_size``; ``trainer.max_epochs`` -> ``trainer_max_epochs``."""
    return flag.lstrip("-").replace("-", "_").replace(".", "_")


def text_value(value: object) -> str | None:
    """A Python default as the command line would spell it (bools as ``true``/``false``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def kind_of_text(raw: str) -> str:
    """The kind a value written on a command line suggests (``8`` int, ``0.1`` float, else str)."""
    for kind, convert in (("int", int), ("float", float)):
        try:
            convert(raw)
            return kind
        except ValueError:
            pass
    return "str"


def flags_to_json(entries: Iterable[FlagEntry]) -> list[dict[str, Any]]:
    return [e.to_json() for e in entries]


def flags_from_json(raw: object) -> list[FlagEntry]:
    """``meta["detected_flags"]`` as entries; bad entries are skipped, a bad list gives []."""
    if not isinstance(raw, list):
        return []
    out: list[FlagEntry] = []
    for item in raw[:512]:
        entry = FlagEntry.from_json(item)
        if entry is not None:
            out.append(entry)
    return out


def _text(v: object) -> str | None:
    if isinstance(v, str):
        return v[:_MAX_TEXT]
    return None


def _value(v: object) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**30 else None
    if isinstance(v, float):
        return str(v) if v == v and abs(v) != float("inf") else None
    return _text(v)


def _texts(v: object) -> tuple[str, ...] | None:
    if not isinstance(v, list):
        return None
    out = [t for t in (_value(x) for x in v[:_MAX_LIST]) if t is not None]
    return tuple(out)


def _strs(v: object) -> tuple[str, ...]:
    """The strings of a list (an option's spellings: a number is not one)."""
    if not isinstance(v, list):
        return ()
    return tuple(t for x in v[:_MAX_LIST] if (t := _text(x)) is not None)
