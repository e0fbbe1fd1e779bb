"""Each flag's current value on the launch command, and how the user spells it there."""

from __future__ import annotations

from collections.abc import Sequence

from memtop.runs.flag_entry import FlagEntry, kind_of_text

# Parsers that take both `--flag VALUE` and `--flag=VALUE` (a configurator takes only the latter).
FLEXIBLE_SOURCES = frozenset({"argparse", "click", "typer", "hf", "help"})
BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _index(entries: Sequence[FlagEntry]) -> dict[str, int]:
    by_option: dict[str, int] = {}
    for i, e in enumerate(entries):
        for o in e.options:
            by_option.setdefault(o, i)
    return by_option


def command_style(args: Sequence[str], entries: Sequence[FlagEntry]) -> str | None:
    """``equals`` or ``space`` when every valued option the user wrote agrees; None otherwise."""
    by_option = _index(entries)
    styles: set[str] = set()
    for a in args:
        if a == "--":
            break
        key, eq, _ = a.partition("=")
        j = by_option.get(key)
        if j is None or not key.startswith("-") or entries[j].kind == "bool":
            continue
        styles.add("equals" if eq else "space")
    return styles.pop() if len(styles) == 1 else None


def apply_command_values(entries: Sequence[FlagEntry], args: Sequence[str], follow_command_style: bool = True) -> list[FlagEntry]:
    """The entries with ``value`` read from the script's own arguments (last occurrence wins) and
    ``syntax`` set to the user's spelling where the user wrote the flag (and, for a flag the user
    did not write, with ``follow_command_style``, to the command's one consistent style when the
    parser accepts both)."""
    out = list(entries)
    by_option = _index(out)
    written: set[int] = set()
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        key, eq, inline = a.partition("=")
        j = by_option.get(key)
        if j is None and eq and not key.startswith("-"):
            j = by_option.get(key.lstrip("+"))
        if j is None:
            i += 1
            continue
        e = out[j]
        written.add(j)
        if e.is_override:
            if eq:
                out[j] = e.replace(value=inline)
            i += 1
            continue
        if e.kind == "bool" and e.bool_values is None:
            if eq:  # `--amp=True` on a parser that allows it
                on = BOOL_WORDS.get(inline.lower())
                out[j] = e.replace(value=None if on is None else ("true" if on else "false"), syntax="equals")
                i += 1
                continue
            if e.source == "hf" and i + 1 < len(args) and args[i + 1].lower() in BOOL_WORDS:
                on = BOOL_WORDS[args[i + 1].lower()]
                out[j] = e.replace(value="true" if on else "false")
                i += 2
                continue
            on = not (key != e.flag and key == e.negative)
            if e.store_false:
                on = not on
            out[j] = e.replace(value="true" if on else "false")
            i += 1
        elif eq:
            value = inline
            if e.kind == "bool" and e.bool_values is not None:
                value = "true" if inline == e.bool_values[0] or inline.lower() == "true" else "false"
            out[j] = e.replace(value=value, syntax="equals")
            i += 1
        elif i + 1 < len(args):
            out[j] = e.replace(value=args[i + 1], syntax="space" if e.source in FLEXIBLE_SOURCES or e.source == "pyproject" else e.syntax)
            i += 2
        else:
            i += 1
    style = command_style(args, out) if follow_command_style else None
    if style is not None:
        out = [e.replace(syntax=style) if k not in written and e.source in FLEXIBLE_SOURCES and not e.is_override else e for k, e in enumerate(out)]
    return out


def flags_in_command(args: Sequence[str]) -> list[FlagEntry]:
    """The user's own ``key=value`` (Hydra-style override) and ``--key=value`` (minGPT's
    ``merge_from_args``, hand-rolled parsers) arguments, for a script whose source shows no parser:
    the command itself proves the script takes them, in exactly that spelling."""
    out: list[FlagEntry] = []
    seen: set[str] = set()
    for a in args:
        if a == "--":
            break
        key, eq, value = a.partition("=")
        dashed = key.startswith("--")
        name = key[2:] if dashed else key.lstrip("+~")
        if not eq or (key.startswith("-") and not dashed) or not name or name in seen or not all(p.isidentifier() for p in name.split(".")):
            continue
        seen.add(name)
        kind = kind_of_text(value)
        bool_values: tuple[str, str] | None = None
        if value.lower() in ("true", "false"):
            kind = "bool"
            bool_values = ("True", "False") if value in ("True", "False") else ("true", "false")
            value = value.lower()
        out.append(
            FlagEntry(
                flag=key if dashed else name,
                kind=kind,
                value=value,
                dest=name.rsplit(".", 1)[-1],
                source="command",
                syntax="equals" if dashed else "override",
                bool_values=bool_values,
            )
        )
    return out
