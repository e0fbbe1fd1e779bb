"""Rewrite the user's own launch command with one flag changed (the advisor's "exact new command")."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from memtop.analyzers.flags import find_target


def split_command(command: list[str], cwd: Path | None = None) -> tuple[list[str], list[str]]:
    """``(launcher + script, script args)``; the whole command counts as args-free when unknown."""
    target = find_target(command, cwd or Path("."))
    if target is None:
        # No script found on disk (e.g. analyzing on another machine): split after the first .py.
        for i, a in enumerate(command):
            if a.endswith(".py"):
                return command[: i + 1], command[i + 1 :]
        return list(command), []
    n = len(command) - len(target.args)
    return command[:n], command[n:]


def _options(entry: dict[str, Any]) -> list[str]:
    return [str(entry["flag"]), *(str(a) for a in entry.get("aliases") or [])]


def _strip(args: list[str], entry: dict[str, Any], takes_value: bool) -> list[str]:
    opts = set(_options(entry))
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        key = a.split("=", 1)[0]
        if key in opts:
            if takes_value and "=" not in a and entry["flag"].startswith("-"):
                i += 2
            else:
                i += 1
            continue
        out.append(a)
        i += 1
    return out


def set_value(args: list[str], entry: dict[str, Any], value: str) -> list[str]:
    """Args with the flag set to ``value`` (in place if present, else appended)."""
    flag = str(entry["flag"])
    if not flag.startswith("-"):  # key=value override
        token = f"{flag}={value}"
        out = [token if a.split("=", 1)[0] == flag else a for a in args]
        return out if token in out else [*out, token]
    opts = set(_options(entry))
    out = list(args)
    replaced = False
    i = 0
    while i < len(out):
        key, eq, _ = out[i].partition("=")
        if key in opts:
            if eq:
                out[i] = f"{key}={value}"
            elif i + 1 < len(out):
                out[i + 1] = value
                i += 1
            else:
                out.append(value)
            replaced = True
        i += 1
    return out if replaced else [*out, flag, value]


def set_bool(args: list[str], entry: dict[str, Any], on: bool) -> list[str]:
    """Args with a bool flag turned on or off (``--flag`` / ``--no-flag`` / removed)."""
    flag = str(entry["flag"])
    if not flag.startswith("-"):
        return set_value(args, entry, "true" if on else "false")
    out = _strip(args, entry, takes_value=False)
    negative = next((a for a in entry.get("aliases") or [] if str(a).startswith("--no-")), None)
    default_on = str(entry.get("default")).lower() == "true"
    store_false = bool(entry.get("store_false"))
    if on:
        if store_false:
            return out  # absent means on
        if default_on:
            return out
        return [*out, flag]
    if store_false:
        return [*out, flag]
    if default_on:
        return [*out, negative] if negative else out
    return out


def join(argv: list[str], env: dict[str, str] | None = None) -> str:
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*prefix, *(shlex.quote(a) for a in argv)])
