"""Flags from what a ``--help`` probe reports: argparse's actions, or the printed help text."""

from __future__ import annotations

import re
from typing import Any

from memtop.runs.flag_entry import KINDS, FlagEntry, dest_of, kind_of_text

_OPT_LINE = re.compile(r"^\s{1,8}(-{1,2}[A-Za-z0-9][^\s,=]*(?:[ =](?:\{[^}]*\}|\[[^\]]*\]|[^\s,-]\S*))?(?:,\s*-{1,2}[A-Za-z0-9][^\s,=]*(?:[ =](?:\{[^}]*\}|\[[^\]]*\]|[^\s,-]\S*))?)*)(?:\s{2,}(.*))?$")
_DEFAULT_RE = re.compile(r"\(default:?\s*([^)]*)\)|\[default:?\s*([^\]]*)\]", re.IGNORECASE)


def pick_flag(options: list[str], negative: list[str]) -> str:
    longs = [o for o in options if o.startswith("--") and o not in negative]
    return longs[0] if longs else options[0]


def from_actions(actions: list[dict[str, Any]]) -> list[FlagEntry]:
    """Entries from the argparse actions the probe's bootstrap dumped."""
    entries: list[FlagEntry] = []
    for a in actions:
        options = [str(o) for o in a.get("options") or [] if isinstance(o, str)]
        if not options:
            continue
        negative = [str(o) for o in a.get("negative") or []]
        kind = a.get("kind") if a.get("kind") in KINDS else "str"
        default = a.get("default") if isinstance(a.get("default"), str) else None
        if kind == "bool" and default is None:
            default = "false"
        flag = pick_flag(options, negative)
        choices = a.get("choices")
        entries.append(
            FlagEntry(
                flag=flag,
                kind=str(kind),
                value=default,
                dest=str(a.get("dest") or dest_of(flag)),
                default=default,
                choices=tuple(str(c) for c in choices) if isinstance(choices, list) else None,
                source="argparse",
                aliases=tuple(o for o in options if o != flag),
                store_false=a.get("store_false") is True,
                help=str(a.get("help") or "")[:400],
            )
        )
    return entries


def parse_help_text(text: str) -> list[FlagEntry]:
    """Flags from argparse-style (or click-style) help text: option lines and their help."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines()[:5000]:
        m = _OPT_LINE.match(line)
        if m:
            current = _spec(m.group(1), m.group(2) or "")
            found.append(current)
            continue
        if current is not None and line.startswith(" " * 10) and line.strip():
            current["help"] = (current["help"] + " " + line.strip()).strip()
        elif not line.strip():
            current = None
    entries = [_finish(d) for d in found]
    return [e for e in entries if e.dest not in ("help", "version")]


def _spec(spec: str, help_text: str) -> dict[str, Any]:
    options: list[str] = []
    metavar: str | None = None
    for part in re.split(r",\s*(?=-)", spec):
        bits = re.split(r"[ =]", part, maxsplit=1)
        options.append(bits[0])
        if len(bits) > 1:
            metavar = bits[1]
    negative = [o for o in options if o.startswith("--no-")]
    flag = pick_flag(options, negative)
    choices: list[str] | None = None
    kind = "bool"
    if metavar:
        kind = "str"
        cm = re.fullmatch(r"\{([^}]*)\}|\[([^\]]*)\]", metavar)
        if cm:
            body = cm.group(1) if cm.group(1) is not None else cm.group(2)
            choices = [c for c in re.split(r"[,|]", body) if c]
            kind = "choice"
        elif metavar.upper() in ("N", "INT", "INTEGER", "NUM"):
            kind = "int"
        elif metavar.upper() in ("FLOAT", "LR", "X"):
            kind = "float"
    return {"flag": flag, "options": options, "kind": kind, "choices": choices, "help": help_text.strip()}


def _finish(d: dict[str, Any]) -> FlagEntry:
    flag = str(d["flag"])
    kind = str(d["kind"])
    default: str | None = "false" if kind == "bool" else None
    m = _DEFAULT_RE.search(d["help"])
    if m:
        raw = (m.group(1) if m.group(1) is not None else m.group(2) or "").strip().strip("'\"")
        if raw not in ("None", ""):
            if kind == "bool":
                default = "true" if raw.lower() == "true" else "false"
            else:
                default = raw
                if kind == "str":
                    kind = kind_of_text(raw)
    choices = d["choices"]
    return FlagEntry(
        flag=flag,
        kind=kind,
        value=default,
        dest=dest_of(flag),
        default=default,
        choices=tuple(choices) if choices else None,
        source="help",
        aliases=tuple(o for o in d["options"] if o != flag),
        help=str(d["help"])[:400],
    )
