"""The advisor's rules. Each takes the run's :class:`Facts` and returns zero or more suggestions.

Estimates are arithmetic on measured figures at the peak; each states what it assumes. A rule
uses one of the script's own flags only when a detected flag has the matching role; otherwise
its change says what to edit in code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from memtop.analyzers import cmdline
from memtop.analyzers.advice import Suggestion
from memtop.analyzers.estimates import (
    CHECKPOINT_KEPT_RATIO,
    autocast_saving,
    checkpoint_saving,
    is_fp32,
    scaling_share,
    tensor_family,
)
from memtop.analyzers.facts import Facts
from memtop.analyzers.flags import FlagEntry
from memtop.analyzers.roles import BF16_NAMES, HALF_NAMES, bf16_name, int_value, is_on
from memtop.analyzers.series import median
from memtop.units import fmt_bytes, fmt_pct

MiB = 1 << 20
MIN_SHARE = 0.05  # a change that saves less than this share of the peak is not worth a line
PLENTIFUL = 0.5  # memory is plentiful when the peak uses at most this share of the device

Rule = Callable[[Facts], list[Suggestion]]


# --- helpers --------------------------------------------------------------------------------------


def _of_peak(f: Facts, nbytes: int) -> str:
    return f"{fmt_pct(100 * f.share(nbytes))} of the peak ({fmt_bytes(nbytes)})"


def _cmd(f: Facts, args: list[str], env: dict[str, str] | None = None) -> tuple[str, tuple[str, ...]]:
    argv = [*f.head, *args]
    return cmdline.join(argv, env), tuple(argv)


def _no_flag(f: Facts, what: str) -> str:
    """Why a change is a code change: the script has no such flag, or its flags are unknown."""
    if not f.flags:
        return f"memtop could not read the script's flags, so this is the change in code; if the script has a {what} flag, use it"
    return f"the script has no {what} flag"


def _worth(f: Facts, saving: float) -> bool:
    return f.level > 0 and saving >= MIN_SHARE * f.level and saving > 0


def _amp_state(f: Facts) -> bool | None:
    """Whether mixed precision is already on (None: cannot tell)."""
    mp = f.roles.get("mixed_precision")
    if mp is not None:
        state = is_on(mp)
        if state:
            return True
        dt = f.roles.get("amp_dtype")
        return False if state is False and dt is None else state
    dt = f.roles.get("amp_dtype")
    if dt is not None and dt.get("value") is not None:
        return str(dt["value"]).lower() in HALF_NAMES
    return None


# --- memory-saving rules --------------------------------------------------------------------------


def mixed_precision(f: Facts) -> list[Suggestion]:
    a = f.activations
    if a <= 0 or _amp_state(f):
        return []
    saving, assumption, measured = autocast_saving(f)
    if not _worth(f, saving):
        return []
    args = list(f.args)
    mp = f.roles.get("mixed_precision")
    dt = f.roles.get("amp_dtype")
    if mp is not None:
        args = cmdline.set_bool(args, mp, True)
    if dt is not None and dt.get("kind") == "choice":
        choice = next((c for c in dt.get("choices") or [] if str(c).lower() in BF16_NAMES), None)
        if choice is not None and str(dt.get("value")).lower() not in BF16_NAMES:
            args = cmdline.set_value(args, dt, str(choice))
    elif dt is not None and mp is None:
        args = cmdline.set_value(args, dt, bf16_name(dt))
    reason = f"activations are {_of_peak(f, a)} and are kept in fp32"
    cost = "matmuls in bf16 (loss curves usually match fp32); faster on tensor-core GPUs, may be slower on CPU"
    if args != f.args:
        change, argv = _cmd(f, args)
        return [Suggestion("mixed_precision", "train with bf16 autocast", reason, saving, cost, change, "high" if measured else "medium", "activations", argv, assumption=assumption)]
    device = "cpu" if f.info.device_kind == "cpu" else "cuda"
    change = f"in code: wrap the forward pass and loss in `with torch.autocast(device_type=\"{device}\", dtype=torch.bfloat16):` ({_no_flag(f, 'mixed-precision')})"
    return [Suggestion("mixed_precision", "train with bf16 autocast", reason, saving, cost, change, "medium", "activations", assumption=assumption)]


def gradient_checkpointing(f: Facts) -> list[Suggestion]:
    a = f.activations
    gc = f.roles.get("gradient_checkpointing")
    if a <= 0 or (gc is not None and is_on(gc)):
        return []
    saving, assumption = checkpoint_saving(f)
    if not _worth(f, saving) or f.share(a) < 0.1:
        return []
    reason = f"activations are {_of_peak(f, a)}"
    cost = "≈25-35% slower steps (each block's forward runs twice)"
    if gc is not None:
        change, argv = _cmd(f, cmdline.set_bool(f.args, gc, True))
        return [Suggestion("gradient_checkpointing", "turn on gradient checkpointing", reason, saving, cost, change, "medium", "activations", argv, assumption=assumption)]
    change = "in code: wrap each repeated block in `torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)` (HF models: `model.gradient_checkpointing_enable()`); " + _no_flag(f, "checkpointing")
    return [Suggestion("gradient_checkpointing", "use gradient checkpointing", reason, saving, cost, change, "low", "activations", assumption=assumption)]


def batch_accumulation(f: Facts) -> list[Suggestion]:
    a = f.activations
    bs = f.roles.get("batch_size")
    batch = int_value(bs)
    if a <= 0 or f.share(a) < 0.1:
        return []
    if bs is None or batch is None or batch < 2:
        if bs is not None:
            return []
        saving = a // 2
        if not _worth(f, saving):
            return []
        return [
            Suggestion(
                "batch_accumulation",
                "halve the micro-batch and accumulate gradients over 2",
                f"activations are {_of_peak(f, a)} and scale with the batch",
                saving,
                "same effective batch; slower when the smaller micro-batch underfills the GPU",
                f"in code: halve the batch your DataLoader yields and call optimizer.step() every 2 micro-batches ({_no_flag(f, 'batch-size')})",
                "low",
                "activations",
                assumption="activations scale linearly with the batch",
            )
        ]
    new_batch = batch // 2
    saving = int(a * (1 - new_batch / batch))
    if not _worth(f, saving):
        return []
    ga = f.roles.get("gradient_accumulation")
    accum = int_value(ga) or 1
    args = cmdline.set_value(f.args, bs, str(new_batch))
    keeps = batch % 2 == 0
    if ga is not None:
        args = cmdline.set_value(args, ga, str(accum * 2))
        change, argv = _cmd(f, args)
        note = "" if keeps else f" (effective batch {batch * accum} → {new_batch * accum * 2}: {batch} is odd)"
        title = f"micro-batch {batch} → {new_batch} with gradient accumulation {accum} → {accum * 2}{note}"
    else:
        change, argv = _cmd(f, args)
        change += f"  (and accumulate gradients over 2 micro-batches in code: {_no_flag(f, 'gradient-accumulation')})"
        title = f"micro-batch {batch} → {new_batch}, accumulating gradients over 2"
    return [
        Suggestion(
            "batch_accumulation",
            title,
            f"activations are {_of_peak(f, a)} at batch {batch} and scale with it",
            saving,
            "same effective batch; slower when the smaller micro-batch underfills the GPU",
            change,
            "high" if ga is not None else "medium",
            "activations",
            argv,
            assumption="activations scale linearly with the micro-batch",
        )
    ]


def half_precision(f: Facts) -> list[Suggestion]:
    hp = f.roles.get("half_precision")
    if hp is not None and hp.get("kind") == "bool" and is_on(hp):
        return []
    if hp is not None and hp.get("kind") in ("choice", "str") and str(hp.get("value")).lower() in HALF_NAMES:
        return []
    params = [t for t in f.large if t["category"] == "parameters" and is_fp32(t["dtype"])]
    if not params:
        return []
    if hp is not None and hp.get("kind") == "bool":
        targets = _targets_of_flag(hp, params)
    else:
        targets = [max(params, key=lambda t: t["bytes"])]
    p = g = o = 0
    assumed: list[str] = []
    for t in targets:
        tp, tg, to, ta = tensor_family(f, t["name"])
        p, g, o = p + tp, g + tg, o + to
        assumed.extend(x for x in ta if x not in assumed)
    saving = (p + g + o) // 2
    if not _worth(f, saving):
        return []
    names = ", ".join(t["name"] for t in targets[:3]) + (" …" if len(targets) > 3 else "")
    held = f" and {fmt_bytes(o)} of optimizer state" + (f" and {fmt_bytes(g)} of gradients" if g else "")
    reason = f"{names} is {_of_peak(f, p)} in fp32, with{held[4:]} at the peak"
    assumption = "fp16 storage halves the tensor, its gradient and its Adam state (they follow its dtype)"
    if assumed:
        assumption += "; " + "; ".join(assumed)
    cost = "fp16 storage rounds the values (≈3 significant digits); keep an fp32 master copy if updates are tiny"
    if hp is not None:
        if hp.get("kind") == "bool":
            args = cmdline.set_bool(f.args, hp, True)
        else:
            choice = next((c for c in hp.get("choices") or ["bf16"] if str(c).lower() in HALF_NAMES), "bf16")
            args = cmdline.set_value(f.args, hp, str(choice))
        change, argv = _cmd(f, args)
        return [Suggestion("half_precision", f"store {names} in half precision", reason, saving, cost, change, "medium", "model_state", argv, assumption=assumption)]
    change = f"in code: keep {names} as torch.float16 (or bfloat16), e.g. `.half()` before building the optimizer ({_no_flag(f, 'half-precision')})"
    return [Suggestion("half_precision", f"store {names} in half precision", reason, saving, cost, change, "medium", "model_state", assumption=assumption)]


def _targets_of_flag(flag: FlagEntry, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parameters a half-precision flag is about: those its help names, else the largest."""
    words = set(re.findall(r"[a-z]{2,}", str(flag.get("help") or "").lower())) - {"in", "the", "of", "to", "and", "store", "fp", "memory"}
    named = [t for t in params if words & set(re.findall(r"[a-z]{2,}", t["name"].lower().replace("_", " ")))]
    return named or [max(params, key=lambda t: t["bytes"])]


def optimizer_state(f: Facts) -> list[Suggestion]:
    o = f.optimizer_state
    if f.share(o) < 0.25 or f.roles.get("half_precision") is not None:
        return []
    saving = o // 2
    return [
        Suggestion(
            "optimizer_state",
            "keep the optimizer state in 8-bit or bf16",
            f"optimizer state is {_of_peak(f, o)}",
            saving,
            "slightly noisier updates; 8-bit Adam needs bitsandbytes",
            "in code: use an 8-bit Adam (bitsandbytes.optim.AdamW8bit, saves ≈75%) or keep exp_avg/exp_avg_sq in bf16 (≈50%)",
            "medium",
            "optimizer_state",
            assumption="bf16 state halves it (8-bit would save ≈75%)",
        )
    ]


def lora(f: Facts) -> list[Suggestion]:
    lr = f.roles.get("lora_rank")
    rank = int_value(lr)
    if lr is None or rank is None or rank > 0:
        return []
    go = f.gradients + f.optimizer_state
    saving = int(go * 0.98)
    if not _worth(f, saving):
        return []
    change, argv = _cmd(f, cmdline.set_value(f.args, lr, "8"))
    return [
        Suggestion(
            "lora",
            "fine-tune low-rank adapters (LoRA r=8) instead of every weight",
            f"gradients and optimizer state of every weight are {_of_peak(f, go)}",
            saving,
            "a different fine-tune: only adapters learn (usually close in quality for fine-tuning)",
            change,
            "medium",
            None,
            argv,
            assumption="the adapters are under 2% of the weights",
        )
    ]


def frames(f: Facts) -> list[Suggestion]:
    fr = f.roles.get("frames")
    n = int_value(fr)
    a = f.activations
    if fr is None or n is None or n < 2 or a <= 0:
        return []
    batch = int_value(f.roles.get("batch_size"))
    found = scaling_share(f, {n, n * batch} if batch else {n}, "frame")
    if found is None:
        return []
    share, assumption = found
    new = n // 2
    saving = int(share * a * (1 - new / n))
    if not _worth(f, saving):
        return []
    change, argv = _cmd(f, cmdline.set_value(f.args, fr, str(new)))
    return [
        Suggestion(
            "frames",
            f"{fr['flag']} {n} → {new}",
            f"activations are {_of_peak(f, a)} for {n} frames",
            saving,
            "fewer frames per step: less temporal context each step",
            change,
            "high" if share < 1.0 or f.large else "medium",
            "activations",
            argv,
            assumption=assumption + "; they halve with the frames",
        )
    ]


def resolution(f: Facts) -> list[Suggestion]:
    rs = f.roles.get("resolution")
    n = int_value(rs)
    a = f.activations
    if rs is None or n is None or n < 2 or a <= 0:
        return []
    help_text = str(rs.get("help") or "").lower()
    if any(w in help_text for w in ("downscale", "downsample", "factor", "divide")):
        new, side = n * 2, 0.5  # a downscale factor: doubling it halves the side
        sizes = set()
    else:
        new, side = n // 2, (n // 2) / n
        sizes = {n, n * n}
    batch = int_value(f.roles.get("batch_size"))
    if batch and sizes:
        sizes |= {n * n * batch, n * batch}
    found = scaling_share(f, sizes, "pixel") if sizes else (1.0, "activations scale with the number of pixels")
    if found is None:
        return []
    share, assumption = found
    saving = int(share * a * (1 - side * side))
    if not _worth(f, saving):
        return []
    change, argv = _cmd(f, cmdline.set_value(f.args, rs, str(new)))
    return [
        Suggestion(
            "resolution",
            f"{rs['flag']} {n} → {new} (half the side, a quarter of the pixels)",
            f"activations are {_of_peak(f, a)} at {rs['flag']} {n}",
            saving,
            "lower resolution: less detail learned",
            change,
            "medium",
            "activations",
            argv,
            assumption=assumption + "; a quarter of the pixels keeps a quarter of them",
        )
    ]


# --- allocator ------------------------------------------------------------------------------------

ALLOC_ENV = "PYTORCH_CUDA_ALLOC_CONF"
EXPANDABLE = "expandable_segments:True"


def expandable_segments(f: Facts) -> list[Suggestion]:
    fr = f.frag
    if not fr.measurable or fr.expandable_segments_saving is None or fr.verdict == "low":
        return []
    saving = fr.expandable_segments_saving
    if saving < max(64 * MiB, int(0.02 * (fr.reserved_max or 0))):
        return []
    change, argv = _cmd(f, list(f.args), {ALLOC_ENV: EXPANDABLE})
    if fr.saving_basis == "reserved_minus_peak":
        reason = (
            f"{fmt_bytes(saving)} was reserved beyond the step's live peak at the most reserved step "
            f"(median {fmt_pct(fr.waste_pct_median)} of reserved); fragmentation {fmt_pct(fr.percent_mean)} on average, {fr.trend or 'flat'}"
        )
        assumption = "expandable segments bring reserved memory down to about the live peak"
    else:
        reason = f"{fmt_bytes(saving)} sat in split free blocks at the most reserved step; fragmentation {fmt_pct(fr.percent_mean)} on average"
        assumption = "expandable segments make the split free blocks usable"
    return [
        Suggestion(
            "expandable_segments",
            f"set {ALLOC_ENV}={EXPANDABLE}",
            reason,
            saving,
            "none measurable in most runs; not compatible with CUDA IPC of allocator blocks",
            change,
            "medium",
            None,
            argv,
            env=((ALLOC_ENV, EXPANDABLE),),
            assumption=assumption,
        )
    ]


_EVERY_STEP = re.compile(r"every (single )?step|each step|always")
_NEVER = re.compile(r"never|off|disabled|no empty_cache")


def cache_policy(entry: FlagEntry) -> dict[str, int]:
    """How often each choice of an empty_cache flag releases the cache, from its help text.

    ``"aggressive = never + …, normal = every 100 steps, minimal = every step"`` →
    ``{"aggressive": 0, "normal": 1, "minimal": 2}`` (0 never, 1 sometimes, 2 every step).
    Choices the help does not describe are left out.
    """
    text = str(entry.get("help") or "").lower()
    out: dict[str, int] = {}
    for choice in entry.get("choices") or []:
        m = re.search(rf"\b{re.escape(str(choice).lower())}\s*[=:]\s*([^,;]+)", text)
        if not m:
            continue
        desc = m.group(1)
        out[str(choice)] = 2 if _EVERY_STEP.search(desc) else 0 if _NEVER.search(desc) else 1
    return out


def empty_cache(f: Facts) -> list[Suggestion]:
    """empty_cache() every step costs time and only helps when memory is tight; never calling it
    lets fragmentation build up in a long run."""
    fr = f.frag
    if not fr.measurable:
        return []
    steps = max(1, f.info.steps)
    frequent = fr.cache_releases >= max(3, steps // 4)
    ec = f.roles.get("empty_cache")
    policy = cache_policy(ec) if ec is not None and ec.get("kind") == "choice" else {}
    current = policy.get(str(ec.get("value"))) if ec is not None else None
    held = median_fragmentation(f)
    if ec is not None and policy and current is not None:
        target: str | None = None
        if current == 2 and fr.verdict == "low" and f.device_total and f.level <= PLENTIFUL * f.device_total:
            target = next((c for c, v in policy.items() if v == 1), None)
        elif current == 0 and fr.verdict in ("high", "moderate"):
            target = next((c for c, v in policy.items() if v == 1), None) or next((c for c, v in policy.items() if v == 2), None)
        if target is None:
            return []
        change, argv = _cmd(f, cmdline.set_value(f.args, ec, target))
        releasing = policy[target] > current
        return [
            Suggestion(
                "empty_cache",
                f"{ec['flag']} {ec['value']} → {target}",
                f"the cache was released {fr.cache_releases} times in {steps} steps; {fmt_bytes(held)} sits reserved but unused at step ends (median)",
                held if releasing else (-held if held is not None else None),
                "slower steps where the cache is released (allocations go back to the driver)" if releasing else "faster steps; that memory stays reserved",
                change,
                "low",
                None,
                argv,
                assumption="releasing the cache returns what is reserved but unused at the end of a step",
            )
        ]
    if frequent and fr.verdict == "low":
        return [
            Suggestion(
                "empty_cache",
                "call torch.cuda.empty_cache() less often",
                f"reserved memory was released {fr.cache_releases} times in {steps} steps while only {fmt_pct(fr.waste_pct_median)} of it is wasted",
                -held if held is not None else None,
                "none; each release makes the next step allocate from the driver again (slower steps)",
                "in code: call torch.cuda.empty_cache() only between phases (e.g. before evaluation), not every step",
                "low",
            )
        ]
    return []


def median_fragmentation(f: Facts) -> int | None:
    values = [v for s in f.series.values() for v in s.fragmentation_bytes if v is not None]
    m = median([float(v) for v in values])
    return int(m) if m is not None else None


# --- leak -----------------------------------------------------------------------------------------


def leak(f: Facts) -> list[Suggestion]:
    lk = f.leak
    if lk.verdict not in ("leak", "suspected") or lk.bytes_per_step is None:
        return []
    where = ", ".join(lk.growing_categories) or "memory outside the tracked tensors"
    tensors = ", ".join(t.name for t in lk.tensors[:3])
    reason = f"{where} grows by {fmt_bytes(lk.bytes_per_step)}/step after warm-up"
    if tensors:
        reason += f" (growing: {tensors})"
    if lk.steps_until_full is not None:
        reason += f"; the device is full in ≈{lk.steps_until_full} steps"
    return [
        Suggestion(
            "leak",
            "stop keeping tensors alive across steps",
            reason,
            lk.growth_bytes,
            "none",
            "in code: accumulate metrics with loss.item() or loss.detach(), not the loss tensor (which keeps its graph); "
            "clear lists of outputs each step; do not store tensors that require grad",
            "high" if lk.verdict == "leak" else "low",
            lk.growing_categories[0] if len(lk.growing_categories) == 1 else None,
            assumption="the growth measured after warm-up is what fixing the leak gives back by the end of this run",
        )
    ]


# --- speed (memory is plentiful) ------------------------------------------------------------------


def _headroom(f: Facts) -> int | None:
    if not f.device_total:
        return None
    used = max(v for v in (f.device_used_max, f.level, f.peak.reserved if f.peak else None) if v is not None)
    return f.device_total - used


def headroom(f: Facts) -> list[Suggestion]:
    free = _headroom(f)
    bs = f.roles.get("batch_size")
    batch = int_value(bs)
    if free is None or bs is None or batch is None or batch < 1 or not f.device_total:
        return []
    if free < 0.25 * f.device_total or f.oom is not None:
        return []
    per_sample = (f.activations + (f.other if f.other_known else 0)) / batch
    if per_sample <= 0:
        return []
    fits = batch + int(0.8 * free / per_sample)
    if fits < 2 * batch:
        return []
    new = 2 * batch
    extra = int(per_sample * (new - batch))
    args = cmdline.set_value(f.args, bs, str(new))
    ga = f.roles.get("gradient_accumulation")
    accum = int_value(ga) or 1
    note = "larger batch: fewer optimizer steps per epoch (retune the learning rate)"
    if ga is not None and accum >= 2 and accum % 2 == 0:
        args = cmdline.set_value(args, ga, str(accum // 2))
        note = "same effective batch with half the accumulation: faster steps"
    change, argv = _cmd(f, args)
    where = "RAM" if f.info.device_kind == "cpu" else "the device"
    return [
        Suggestion(
            "headroom",
            f"grow the batch {batch} → {new} ({f'fits up to ≈{fits}' if fits <= 16 * batch else 'fits over 16× more'})",
            f"{fmt_bytes(free)} of {where} ({fmt_pct(100 * free / f.device_total)}) is never used",
            -extra,
            f"uses ≈{fmt_bytes(extra)} more; {note}",
            change,
            "medium",
            "activations",
            argv,
            assumption="activations (and inputs) scale linearly with the batch; 20% of the free memory is kept as margin",
        )
    ]


def costly_saving_off(f: Facts) -> list[Suggestion]:
    free = _headroom(f)
    if free is None or not f.device_total or f.level > PLENTIFUL * f.device_total or f.oom is not None:
        return []
    out: list[Suggestion] = []
    gc = f.roles.get("gradient_checkpointing")
    if gc is not None and is_on(gc) and f.activations > 0:
        grown = int(f.activations * (CHECKPOINT_KEPT_RATIO - 1))
        if grown < 0.8 * free:
            change, argv = _cmd(f, cmdline.set_bool(f.args, gc, False))
            out.append(
                Suggestion(
                    "costly_saving_off",
                    "turn gradient checkpointing off",
                    f"the peak is {fmt_pct(100 * f.level / f.device_total)} of the device; checkpointing recomputes every block",
                    -grown,
                    f"uses ≈{fmt_bytes(grown)} more; steps ≈25-35% faster",
                    change,
                    "medium",
                    "activations",
                    argv,
                    assumption=f"without checkpointing a block keeps ≈{CHECKPOINT_KEPT_RATIO:g}× its input",
                )
            )
    hp = f.roles.get("half_precision")
    if hp is not None and hp.get("kind") == "bool" and is_on(hp):
        halves = [t for t in f.large if t["category"] == "parameters" and t["dtype"] in ("torch.float16", "torch.bfloat16")]
        grown = sum(t["bytes"] for t in halves) * 3  # back to fp32: tensor, grad and Adam state double
        if halves and grown < 0.8 * free:
            change, argv = _cmd(f, cmdline.set_bool(f.args, hp, False))
            out.append(
                Suggestion(
                    "costly_saving_off",
                    f"turn {hp['flag']} off (full fp32 precision)",
                    f"the peak is {fmt_pct(100 * f.level / f.device_total)} of the device",
                    -grown,
                    f"uses ≈{fmt_bytes(grown)} more; exact fp32 values",
                    change,
                    "low",
                    None,
                    argv,
                    assumption="the half-precision tensors, their gradients and Adam state double",
                )
            )
    dt = f.roles.get("amp_dtype")
    if dt is not None and str(dt.get("value")).lower() in ("fp16", "float16", "16", "16-mixed"):
        choice = next((c for c in dt.get("choices") or [] if str(c).lower() in BF16_NAMES), None)
        if choice is not None:
            change, argv = _cmd(f, cmdline.set_value(f.args, dt, str(choice)))
            out.append(
                Suggestion(
                    "costly_saving_off",
                    f"{dt['flag']} {dt['value']} → {choice}",
                    "fp16 needs loss scaling and can overflow; bf16 has fp32's range at the same size",
                    0,
                    "none in memory; needs a GPU with bf16 (Ampere or newer)",
                    change,
                    "low",
                    None,
                    argv,
                )
            )
    return out


RULES: list[Rule] = [
    mixed_precision,
    gradient_checkpointing,
    batch_accumulation,
    half_precision,
    optimizer_state,
    lora,
    frames,
    resolution,
    expandable_segments,
    empty_cache,
    leak,
    headroom,
    costly_saving_off,
]
