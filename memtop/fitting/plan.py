"""What a fit probes: the flag (given with --vary, or picked from the detected flags) and its values.

Checked before anything runs, so bad input is one line and exit 2 without a probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memtop.errors import MemtopError
from memtop.fitting.scaling import (
    SCALING_WORDS,
    current_value,
    default_values,
    find_flag,
    pick_scaling_flag,
    scaling_role,
)
from memtop.runs.flag_entry import FlagEntry


@dataclass
class Plan:
    entry: FlagEntry
    role: str | None
    chosen: str  # "given" (--vary) or "detected"
    values: list[float]
    integer: bool
    notes: list[str] = field(default_factory=list)

    @property
    def flag(self) -> str:
        return self.entry.flag


def fmt_value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def parse_numbers(text: str, what: str) -> list[float]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise MemtopError(f"{what}: {part!r} is not a number") from None
        if not v > 0 or v == float("inf"):
            raise MemtopError(f"{what}: values must be positive, got {part}")
        out.append(v)
    if not out:
        raise MemtopError(f"{what}: no values given")
    return out


def parse_vary(texts: list[str]) -> tuple[str, list[float]] | None:
    """``--vary NAME=V1,V2`` -> (name without dashes, values); None when not given."""
    if not texts:
        return None
    if len(texts) > 1:
        raise MemtopError("one --vary at a time: a fit varies one flag (run `memtop fit` once per flag)")
    name, eq, raw = texts[0].partition("=")
    name = name.strip().lstrip("-")
    if not eq or not name:
        raise MemtopError(f"--vary takes NAME=V1,V2,...: got {texts[0]!r}")
    values = parse_numbers(raw, f"--vary {name}")
    if len(set(values)) < 2:
        raise MemtopError("a fit needs at least two different values: e.g. --vary batch-size=1,2,4")
    return name, values


def choose(entries: list[FlagEntry], vary: tuple[str, list[float]] | None) -> Plan:
    notes: list[str] = []
    if vary is not None:
        name, values = vary
        entry = find_flag(entries, name)
        if entry is None:
            if entries:
                known = ", ".join(e.flag for e in entries if e.kind in ("int", "float"))
                raise MemtopError(f"the script has no flag --{name}" + (f" (its number flags: {known})" if known else ""))
            entry = FlagEntry(flag=f"--{name}", dest=name.replace("-", "_"), kind="int" if all(v.is_integer() for v in values) else "float", source="command")
            notes.append(f"the script's flags could not be detected: {entry.flag} is passed as given")
        role, chosen = scaling_role(entry), "given"
    else:
        picked = pick_scaling_flag(entries)
        if picked is None:
            raise MemtopError("no scaling flag (batch size, frames, sequence length, number of points, resolution) found in the script's "
                              "flags: pass one with --vary NAME=V1,V2,V3, e.g. --vary batch-size=1,2,4")
        entry, role = picked
        values = default_values(current_value(entry), entry.kind == "int")
        chosen = "detected"
        notes.append(f"varying {entry.flag} ({SCALING_WORDS[role]}), found among the script's flags; pass --vary to choose another")
    if entry.kind == "int" and not all(v.is_integer() for v in values):
        raise MemtopError(f"{entry.flag} takes whole numbers: got {', '.join(fmt_value(v) for v in values)}")
    integer = entry.kind == "int" or (entry.kind != "float" and all(v.is_integer() for v in values))
    values = sorted(set(values))
    if len(values) < 2:
        raise MemtopError("a fit needs at least two different values: e.g. --vary batch-size=1,2,4")
    return Plan(entry, role, chosen, values, integer, notes)
