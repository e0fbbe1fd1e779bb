"""The user's command line with flags changed, spelled the way the user (or the script) spells them.

A flag already on the command line is changed in place, keeping the user's own spelling
(``--batch_size=8`` -> ``--batch_size=4``, ``-b 8`` -> ``-b 4``, ``trainer.batch=8`` ->
``trainer.batch=4``). A new flag is added in the entry's ``syntax`` (the parser's native form, or
the command's consistent style), before a ``--`` that ends the options.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from memtop.analyzers.flags.launch import parse_launch
from memtop.analyzers.flags.values import BOOL_WORDS
from memtop.runs.flag_entry import FlagEntry

ChangeValue = str | int | float | bool


def apply_flag_changes(argv: Sequence[str], changes: Mapping[str, ChangeValue], flags: Sequence[FlagEntry]) -> list[str]:
    """``argv`` (the whole launch command) with each ``{flag: new value}`` applied to the script's args.

    A key is a flag, one of its aliases or its dest; a bool value turns a bool flag on or off.
    Raises ``KeyError`` for a key that names no detected flag: a change the script cannot express
    must be said as a code change, never invented as a flag.
    """
    launch = parse_launch(list(argv))
    args = list(launch.args)
    for key, value in changes.items():
        entry = _find(key, flags)
        if entry is None:
            raise KeyError(f"the script has no flag {key!r}")
        if entry.kind == "bool" and (isinstance(value, bool) or str(value).lower() in BOOL_WORDS):
            on = value if isinstance(value, bool) else BOOL_WORDS[str(value).lower()]
            args = set_bool(args, entry, on)
        else:
            args = set_value(args, entry, _text(value))
    return [*launch.head, *args]


def _find(key: str, flags: Sequence[FlagEntry]) -> FlagEntry | None:
    for e in flags:
        if key == e.flag or key in e.aliases:
            return e
    return next((e for e in flags if key == e.dest), None)


def _text(value: ChangeValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def spell_value(entry: FlagEntry, value: str) -> str:
    """The value as the script parses it: a configurator's float must look like a float."""
    if entry.source == "configurator" and entry.kind == "float":
        try:
            f = float(value)
        except ValueError:
            return value
        if "." not in value and "e" not in value.lower() and f == f and abs(f) != float("inf"):
            return repr(f)
    return value


def _tokens(entry: FlagEntry, option: str, value: str) -> list[str]:
    if entry.is_override:
        return [f"{option}={value}"]
    if entry.syntax == "equals" or (value.startswith("-") and entry.source != "configurator"):
        return [f"{option}={value}"]
    return [option, value]


def _insert(args: list[str], tokens: list[str]) -> list[str]:
    """Append ``tokens`` before a ``--`` that ends the options (argparse REMAINDER thinking)."""
    if "--" in args:
        i = args.index("--")
        return [*args[:i], *tokens, *args[i:]]
    return [*args, *tokens]


def _key(arg: str, entry: FlagEntry) -> str:
    key = arg.partition("=")[0]
    return key.lstrip("+") if entry.is_override else key


def set_value(args: Sequence[str], entry: FlagEntry, value: str) -> list[str]:
    """The script's args with ``entry`` set to ``value`` (in place if present, else added)."""
    value = spell_value(entry, value)
    options = set(entry.options)
    out = list(args)
    replaced = False
    i = 0
    while i < len(out):
        if out[i] == "--":
            break
        key = _key(out[i], entry)
        if key in options:
            written, eq, _ = out[i].partition("=")
            if eq or entry.is_override:
                out[i] = f"{written}={value}"
            elif i + 1 < len(out):
                out[i + 1] = value
                i += 1
            else:
                out.append(value)
            replaced = True
        i += 1
    return out if replaced else _insert(out, _tokens(entry, entry.flag, value))


def _strip(args: list[str], entry: FlagEntry, options: set[str]) -> list[str]:
    """Remove every occurrence of a switch (and an HF-style bool word right after it)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out += args[i:]
            break
        if a.partition("=")[0] in options:
            hf_word = entry.source == "hf" and "=" not in a and i + 1 < len(args) and args[i + 1].lower() in BOOL_WORDS
            i += 2 if hf_word else 1
            continue
        out.append(a)
        i += 1
    return out


def set_bool(args: Sequence[str], entry: FlagEntry, on: bool) -> list[str]:
    """The script's args with a bool flag on or off: ``--flag`` / ``--no-flag`` / removed for a
    switch, ``--flag=True`` for a configurator, ``flag=true`` for an override."""
    if entry.bool_values is not None or entry.is_override:
        words = entry.bool_values or ("true", "false")
        return set_value(args, entry, words[0] if on else words[1])
    out = list(args)
    negative = entry.negative
    positives = {o for o in entry.options if o != negative}
    options_part = out[: out.index("--")] if "--" in out else out
    if any(a.partition("=")[0] in entry.options and "=" in a for a in options_part):
        # The user wrote `--amp=False`: keep that spelling.
        return set_value(out, entry.replace(kind="str"), "True" if on else "False")
    if entry.source == "hf":  # HfArgumentParser also takes `--bf16 False`: keep that spelling
        for i, a in enumerate(options_part[:-1]):
            if a in positives and options_part[i + 1].lower() in BOOL_WORDS:
                return [*out[: i + 1], "True" if on else "False", *out[i + 2 :]]
    default_on = str(entry.default).lower() == "true"
    if entry.store_false:  # the flag's presence means off
        out = _strip(out, entry, set(entry.options))
        return out if on else _insert(out, [entry.flag])
    has_positive = any(a in positives for a in options_part)
    if on:
        out = _strip(out, entry, {negative}) if negative else out
        return out if has_positive or default_on else _insert(out, [entry.flag])
    out = _strip(out, entry, positives)
    if default_on and negative and negative not in out:
        return _insert(out, [negative])
    return out


def join(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """A shell-ready command line (``VAR=value cmd args``)."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*prefix, shlex.join(argv)]) if prefix else shlex.join(argv)
