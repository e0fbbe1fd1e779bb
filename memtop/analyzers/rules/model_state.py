"""Rules that shrink the model's state, which is alive at every moment of the step: parameters in
half precision, a smaller optimizer state (Adam-family only), LoRA instead of a full fine-tune."""

from __future__ import annotations

import re

from memtop.analyzers import cmdline, whatif
from memtop.analyzers.estimates import is_fp32, tensor_family
from memtop.analyzers.facts import Facts
from memtop.analyzers.flags import FlagEntry
from memtop.analyzers.roles import HALF_NAMES, int_value, is_on
from memtop.analyzers.rules.common import cmd, no_flag, of_peak, peak_basis, worth
from memtop.analyzers.suggestion import Suggestion
from memtop.runs.records import LargeTensor
from memtop.units import fmt_bytes as fmt


def _largest(f: Facts, category: str) -> int:
    return max([f.cats[category], *(m[category] for m in f.moments.values())])


def shrink_state(f: Facts, params: int = 0, grads: int = 0, state: int = 0) -> tuple[int, str]:
    """(peak saving, where the peak is) when these bytes of parameters, gradients and optimizer
    state go, at every moment where that category is alive (in proportion to its size there)."""
    factors = {}
    for category, nbytes in (("parameters", params), ("gradients", grads), ("optimizer_state", state)):
        largest = _largest(f, category)
        if largest > 0 and nbytes > 0:
            factors[category] = max(0.0, 1 - nbytes / largest)

    def change(point: str, m: whatif.Moment) -> dict[str, float]:
        return whatif.scaled(m, **factors)

    return whatif.saving(f, change)


def half_precision(f: Facts) -> list[Suggestion]:
    hp = f.roles.get("half_precision")
    if hp is not None and hp.kind == "bool" and is_on(hp):
        return []
    if hp is not None and hp.kind in ("choice", "str") and str(hp.value).lower() in HALF_NAMES:
        return []
    params = [t for t in f.large if t.category == "parameters" and is_fp32(t.dtype)]
    if not params:
        return []
    if hp is not None and hp.kind == "bool":
        targets = _targets_of_flag(hp, params)
    else:
        targets = [max(params, key=lambda t: t.bytes)]
    p = g = o = 0
    assumed: list[str] = []
    for t in targets:
        tp, tg, to, ta = tensor_family(f, t.name)
        p, g, o = p + tp, g + tg, o + to
        assumed.extend(x for x in ta if x not in assumed)
    saving, where = shrink_state(f, p // 2, g // 2, o // 2)
    if not worth(f, saving):
        return []
    names = ", ".join(t.name for t in targets[:3]) + (" …" if len(targets) > 3 else "")
    held = f" and {fmt(o)} of optimizer state" + (f" and {fmt(g)} of gradients" if g else "")
    reason = f"{names} is {of_peak(f, p)} in fp32, with{held[4:]} at the peak"
    assumption = whatif.joined(
        "fp16 storage halves the tensor, its gradient and its optimizer state (they follow its dtype)", *assumed, where, f"estimate of {peak_basis(f)}"
    )
    cost = "fp16 storage rounds the values (≈3 significant digits); keep an fp32 master copy if updates are tiny"
    if hp is not None:
        if hp.kind == "bool":
            args = cmdline.set_bool(f.args, hp, True)
        else:
            choice = next((c for c in hp.choices or ["bf16"] if str(c).lower() in HALF_NAMES), "bf16")
            args = cmdline.set_value(f.args, hp, str(choice))
        change, argv = cmd(f, args)
        return [Suggestion("half_precision", f"store {names} in half precision", reason, saving, cost, change, "medium", "model_state", argv, assumption=assumption)]
    change = f"in code: keep {names} as torch.float16 (or bfloat16), e.g. `.half()` before building the optimizer ({no_flag(f, 'half-precision')})"
    return [Suggestion("half_precision", f"store {names} in half precision", reason, saving, cost, change, "medium", "model_state", assumption=assumption)]


def _targets_of_flag(flag: FlagEntry, params: list[LargeTensor]) -> list[LargeTensor]:
    """The parameters a half-precision flag is about: those its help names, else the largest."""
    words = set(re.findall(r"[a-z]{2,}", str(flag.help or "").lower())) - {"in", "the", "of", "to", "and", "store", "fp", "memory"}
    named = [t for t in params if words & set(re.findall(r"[a-z]{2,}", t.name.lower().replace("_", " ")))]
    return named or [max(params, key=lambda t: t.bytes)]


def optimizer_state(f: Facts) -> list[Suggestion]:
    """8-bit / bf16 Adam state: only for an Adam-family optimizer (silent for SGD and the like;
    an unrecorded optimizer gets the general advice, at low confidence)."""
    o = _largest(f, "optimizer_state")
    if f.share(o) < 0.25 or f.roles.get("half_precision") is not None or f.model.adam_family is False:
        return []
    saving, where = shrink_state(f, state=o // 2)
    if not worth(f, saving):
        return []
    name = f.model.optimizer_name
    return [
        Suggestion(
            "optimizer_state",
            "keep the Adam state in 8-bit or bf16",
            f"optimizer state{f' ({name})' if name else ''} is {of_peak(f, o)}",
            saving,
            "slightly noisier updates; 8-bit Adam needs bitsandbytes",
            "in code: use an 8-bit Adam (bitsandbytes.optim.AdamW8bit, saves ≈75% of the state) or keep exp_avg/exp_avg_sq in bf16 (≈50%)",
            "medium" if f.model.adam_family else "low",
            "optimizer_state",
            assumption=whatif.joined("bf16 state halves it (8-bit would save ≈75%)", where, f"estimate of {peak_basis(f)}"),
        )
    ]


def lora(f: Facts) -> list[Suggestion]:
    lr = f.roles.get("lora_rank")
    rank = int_value(lr)
    if lr is None or rank is None or rank > 0:
        return []
    g, o = _largest(f, "gradients"), _largest(f, "optimizer_state")
    saving, where = shrink_state(f, grads=int(g * 0.98), state=int(o * 0.98))
    if not worth(f, saving):
        return []
    change, argv = cmd(f, cmdline.set_value(f.args, lr, "8"))
    return [
        Suggestion(
            "lora",
            "fine-tune low-rank adapters (LoRA r=8) instead of every weight",
            f"gradients and optimizer state of every weight are {of_peak(f, g + o)}",
            saving,
            "a different fine-tune: only adapters learn (usually close in quality for fine-tuning)",
            change,
            "medium",
            None,
            argv,
            assumption=whatif.joined("the adapters are under 2% of the weights", where, f"estimate of {peak_basis(f)}"),
        )
    ]
