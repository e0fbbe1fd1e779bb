"""What a detected flag controls (its role), from its name, kind and help text.

The advisor only suggests a flag through its role; a flag whose role is unclear is never used.
``[tool.memtop.flags]`` names roles explicitly and wins over these guesses.
"""

from __future__ import annotations

import re

from memtop.runs.flag_entry import FlagEntry

ROLES = (
    "batch_size",
    "gradient_accumulation",
    "mixed_precision",
    "amp_dtype",
    "gradient_checkpointing",
    "half_precision",
    "frames",
    "resolution",
    "empty_cache",
    "lora_rank",
    "num_layers",
)

HALF_NAMES = {"fp16", "float16", "half", "bf16", "bfloat16", "16", "16-mixed", "bf16-mixed", "16-true", "bf16-true"}
BF16_NAMES = ("bf16", "bfloat16", "bf16-mixed")
FP16_NAMES = ("fp16", "float16", "half", "16", "16-mixed")
FULL_NAMES = {"fp32", "float32", "float", "32", "32-true", "no", "none", "full"}

_NAME_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("gradient_accumulation", re.compile(r"^(grad(ient)?_?)?accum(ulat(e|ion))?(_grad)?(_steps|_iters|_batches)?$|^accumulate_grad_batches$")),
    ("batch_size", re.compile(r"^(train_|per_device_train_|micro_|mini_)?(batch_size|batch|bs|bsz)$")),
    ("gradient_checkpointing", re.compile(r"^(grad(ient)?|activation)_?checkpoint(ing)?$|^checkpoint_activations$|^recompute(_activations)?$")),
    ("lora_rank", re.compile(r"^lora_?(r|rank|dim)$")),
    ("frames", re.compile(r"^(max_|num_|n_)?frames$|^clip_len(gth)?$|^frames_per_(clip|step|batch)$")),
    ("resolution", re.compile(r"^(image_|img_|render_|train_)?(resolution|res|size)$")),
    ("empty_cache", re.compile(r"^(fragmentation|empty_cache(_every|_freq|_interval|_mode)?|cache_clear(ing)?)$")),
    ("num_layers", re.compile(r"^((n|num)_?)?(layers|blocks)$|^(n|num)_?layer$|^depth$")),
]


def _words(entry: FlagEntry) -> str:
    return entry.help.lower()


def role_of(entry: FlagEntry) -> str | None:
    """The role of one flag entry (see :data:`ROLES`), or None."""
    if entry.role in ROLES:
        return entry.role
    dest = (entry.dest or entry.flag).lower().lstrip("-").replace("-", "_")
    kind = entry.kind
    help_text = _words(entry)
    if dest.startswith(("eval_", "val_", "valid_", "test_", "per_device_eval_")):
        return None
    for role, pattern in _NAME_RULES:
        if pattern.match(dest):
            if role in ("batch_size", "gradient_accumulation", "lora_rank", "frames", "num_layers") and kind not in ("int", "str"):
                continue
            if role == "resolution" and kind not in ("int", "float", "str", "choice"):
                continue
            if role == "gradient_checkpointing" and kind != "bool":
                continue
            return role
    if kind == "bool":
        if re.fullmatch(r"(use_)?(amp|autocast|mixed_precision|fp16|bf16|half_precision_training)", dest):
            return "mixed_precision"
        if re.search(r"optimi[sz]e_memory|half_(params|storage|sh)|fp16_(params|storage|sh)|low_memory", dest):
            return "half_precision"
        if "fp16" in help_text and any(w in help_text for w in ("store", "storage", "coefficients", "param")):
            return "half_precision"
    if kind in ("choice", "str") and re.fullmatch(r"(amp_|autocast_|mixed_|compute_)?(dtype|precision)", dest):
        choices = {c.lower() for c in entry.choices or ()}
        if kind == "choice" and not (choices & HALF_NAMES):
            return None
        if any(w in help_text for w in ("param", "weight", "storage", "model dtype", "master")):
            return "half_precision"
        return "amp_dtype"
    return None


def roles(entries: list[FlagEntry]) -> dict[str, FlagEntry]:
    """``{role: entry}``; pyproject entries win over detected ones, the first match otherwise."""
    out: dict[str, FlagEntry] = {}
    for e in sorted(entries, key=lambda e: 0 if e.source == "pyproject" else 1):
        r = role_of(e)
        if r is not None and r not in out:
            out[r] = e
    return out


def bf16_name(entry: FlagEntry) -> str:
    """How this dtype flag spells bfloat16: one of its choices, else in the style of its values
    (``bfloat16`` next to ``float32``/``float16``, as nanoGPT's ``dtype`` takes), else ``bf16``."""
    for c in entry.choices or ():
        if c.lower() in BF16_NAMES:
            return c
    seen = " ".join(v for v in (entry.value, entry.default, entry.help) if v).lower()
    return "bfloat16" if re.search(r"\b(b?float(16|32))\b", seen) else "bf16"


def is_on(entry: FlagEntry) -> bool | None:
    """A bool flag's current state (None when unknown)."""
    if entry.value is None:
        return None
    return entry.value.lower() in ("true", "1", "yes", "on")


def int_value(entry: FlagEntry | None) -> int | None:
    if entry is None or entry.value is None:
        return None
    try:
        return int(entry.value)
    except ValueError:
        try:
            f = float(entry.value)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None
