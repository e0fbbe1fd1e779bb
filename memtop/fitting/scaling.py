"""Which flag to vary, at which values, and which of the advisor's savings the script can express.

Everything is read off the detected flags (``detect_flags`` entries, as stored in meta.json) and
spelled in the user's own command line; nothing here runs anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from memtop.analyzers.cmdline import set_bool, set_value, split_command
from memtop.analyzers.estimates import CHECKPOINT_KEPT_RATIO, TYPICAL_HALVED_SHARE
from memtop.analyzers.flags import FlagEntry
from memtop.analyzers.roles import BF16_NAMES, int_value, role_of, roles

# Scaling flags, in the order one is picked when --vary is not given.
SCALING_ROLES = ("batch_size", "frames", "sequence_length", "points", "resolution")
SCALING_WORDS = {
    "batch_size": "batch size",
    "frames": "frames",
    "sequence_length": "sequence length",
    "points": "number of points",
    "resolution": "resolution",
}
_SEQ_LEN = re.compile(r"^(max_)?(seq(uence)?_?len(gth)?|block_size|context_(len(gth)?|size)|max_length|n_ctx|(num|max)_tokens)$")
_POINTS = re.compile(r"^(num_|n_|max_|init_)?(points|gaussians|splats|particles|vertices|pts|rays)$")


def scaling_role(entry: FlagEntry) -> str | None:
    """The scaling role of a flag (see :data:`SCALING_ROLES`), or None."""
    if entry.kind not in ("int", "float"):
        return None
    dest = (entry.dest or entry.flag).lower().lstrip("-").replace("-", "_")
    if _SEQ_LEN.match(dest):
        return "sequence_length"
    if _POINTS.match(dest):
        return "points"
    role = role_of(entry)
    return role if role in ("batch_size", "frames", "resolution") else None


def pick_scaling_flag(entries: list[FlagEntry]) -> tuple[FlagEntry, str] | None:
    found: dict[str, FlagEntry] = {}
    for e in entries:
        r = scaling_role(e)
        if r is not None and r not in found:
            found[r] = e
    for r in SCALING_ROLES:
        if r in found:
            return found[r], r
    return None


def find_flag(entries: list[FlagEntry], name: str) -> FlagEntry | None:
    """The entry for ``--vary NAME`` (``batch-size`` finds ``--batch-size``; the dest works too)."""
    bare = name.lstrip("-")
    for e in entries:
        if any(o.lstrip("-") == bare for o in e.options):
            return e
    for e in entries:
        if e.dest == bare.replace("-", "_"):
            return e
    return None


def current_value(entry: FlagEntry) -> float | None:
    try:
        v = float(str(entry.value))
    except ValueError:
        return None
    return v if v > 0 else None


def default_values(current: float | None, integer: bool) -> list[float]:
    """Three probes from a quarter of the current value up to it (or 1, 2, 4 for small values)."""
    if current is None or current < 4:
        base = [1.0, 2.0, 4.0] if integer else [0.25, 0.5, 1.0] if current is None else [current / 4, current / 2, current]
        return base
    vals = [current / 4, current / 2, current]
    if integer:
        vals = [float(max(1, round(v))) for v in vals]
    return sorted(set(vals))


# ------------------------------------------------------------------------------------ savings


@dataclass
class Saving:
    """One of the advisor's savings as it applies to this script."""

    key: str  # amp, checkpointing, accumulation, lora, fp16_storage
    title: str
    change: str  # the flag change, or what an estimate assumes the code change to be
    how: str  # "measured" (a probe with the flag), "estimated", or "arithmetic"
    args_change: list[str] | None = None  # the script's own arguments with the saving on (measured only)
    factors: dict[str, float] = field(default_factory=dict)  # estimated: per-category multipliers
    assumption: str = ""


SAVING_TITLES = {
    "amp": "bf16/AMP",
    "checkpointing": "grad checkpointing",
    "accumulation": "accumulation",
    "lora": "LoRA",
    "fp16_storage": "fp16 storage",
}


def _is_on(entry: FlagEntry) -> bool:
    return str(entry.value).lower() in ("true", "1", "yes", "on")


def savings_for(entries: list[FlagEntry], command: list[str], scaling: str | None, cwd: Path) -> tuple[list[Saving], list[str]]:
    """The savings to put in the cards table, and notes on those left out (already on, not applicable)."""
    _, args = split_command(command, cwd)
    by_role = roles(entries)
    out: list[Saving] = []
    notes: list[str] = []

    def measured(key: str, change: str, new_args: list[str]) -> None:
        out.append(Saving(key, SAVING_TITLES[key], change, "measured", new_args))

    def estimated(key: str, change: str, factors: dict[str, float], assumption: str) -> None:
        out.append(Saving(key, SAVING_TITLES[key], change, "estimated", None, factors, assumption))

    amp_factor = 1 - TYPICAL_HALVED_SHARE / 2
    amp_text = f"activations × {amp_factor:.2f} (≈{TYPICAL_HALVED_SHARE:.0%} of saved bytes halve)"
    mp, dt = by_role.get("mixed_precision"), by_role.get("amp_dtype")
    if mp is not None and mp.kind == "bool":
        if _is_on(mp):
            notes.append(f"bf16/AMP is already on ({mp.flag})")
        else:
            measured("amp", mp.flag, set_bool(args, mp, True))
    elif dt is not None and dt.choices:
        half = next((c for c in dt.choices if c.lower() in BF16_NAMES), None)
        if half is None or str(dt.value).lower() in BF16_NAMES:
            notes.append(f"bf16/AMP: {dt.flag} is already {dt.value}" if half else f"bf16/AMP: no bf16 choice in {dt.flag}")
        else:
            measured("amp", f"{dt.flag} {half}", set_value(args, dt, half))
    else:
        estimated("amp", "bf16 autocast (a code change)", {"activations": amp_factor}, amp_text)

    gc = by_role.get("gradient_checkpointing")
    if gc is not None:
        if _is_on(gc):
            notes.append(f"gradient checkpointing is already on ({gc.flag})")
        else:
            measured("checkpointing", gc.flag, set_bool(args, gc, True))
    else:
        estimated("checkpointing", "checkpoint every block (a code change)", {"activations": 1 / CHECKPOINT_KEPT_RATIO},
                  f"activations × 1/{CHECKPOINT_KEPT_RATIO:g} (a block saves ≈{CHECKPOINT_KEPT_RATIO:g}× its input)")

    acc, bs = by_role.get("gradient_accumulation"), by_role.get("batch_size")
    if scaling == "batch_size":
        flag = acc.flag if acc is not None else "gradient accumulation (a code change)"
        out.append(Saving("accumulation", SAVING_TITLES["accumulation"], f"{flag} K", "arithmetic",
                          assumption="the micro-batch that fits stays as is; the effective batch is it × K"))
    elif acc is not None and bs is not None and (int_value(bs) or 0) >= 2:
        b, k = int_value(bs) or 2, int_value(acc) or 1
        new_args = set_value(set_value(args, bs, str(b // 2)), acc, str(k * 2))
        measured("accumulation", f"{bs.flag} {b // 2} {acc.flag} {k * 2}", new_args)
    elif bs is not None and (int_value(bs) or 0) >= 2:
        estimated("accumulation", f"{bs.flag} {(int_value(bs) or 2) // 2} with accumulation ×2 (a code change)", {"activations": 0.5},
                  "activations × 0.5 (half the micro-batch)")
    else:
        notes.append("accumulation: the script has no batch-size flag to trade for accumulation steps")

    lr = by_role.get("lora_rank")
    if lr is not None:
        if (int_value(lr) or 0) > 0:
            notes.append(f"LoRA is already on ({lr.flag} {lr.value})")
        else:
            measured("lora", f"{lr.flag} 8", set_value(args, lr, "8"))
    else:
        estimated("lora", "LoRA adapters on a frozen base (a code change)", {"gradients": 0.02, "optimizer_state": 0.02},
                  "gradients and optimizer state × 0.02 (adapters ≈2% of the weights)")

    hp = by_role.get("half_precision")
    if hp is not None and hp.kind == "bool":
        if _is_on(hp):
            notes.append(f"fp16 storage is already on ({hp.flag})")
        else:
            measured("fp16_storage", hp.flag, set_bool(args, hp, True))
    else:
        estimated("fp16_storage", "fp16/bf16 parameters (a code change)", {"parameters": 0.5, "gradients": 0.5},
                  "parameters and gradients × 0.5 (optimizer state stays fp32)")
    return out, notes
