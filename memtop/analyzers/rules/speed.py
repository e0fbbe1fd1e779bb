"""Rules for when memory is plentiful: grow the batch into the headroom, and turn off savings that
cost speed or precision. Their estimates are negative: how much the step's peak would rise."""

from __future__ import annotations

from memtop.analyzers import cmdline, whatif
from memtop.analyzers.estimates import uncheckpointed_activations
from memtop.analyzers.facts import Facts
from memtop.analyzers.flags import FlagEntry
from memtop.analyzers.roles import BF16_NAMES, int_value, is_on
from memtop.analyzers.rules.activations import batch_change
from memtop.analyzers.rules.common import PLENTIFUL, cmd, peak_basis
from memtop.analyzers.suggestion import Suggestion
from memtop.units import fmt_bytes, fmt_pct


def free_bytes(f: Facts) -> int | None:
    if not f.device_total:
        return None
    used = max(v for v in (f.device_used_max, f.level, f.peak.reserved if f.peak else None) if v is not None)
    return f.device_total - used


def headroom(f: Facts) -> list[Suggestion]:
    free = free_bytes(f)
    bs = f.roles.get("batch_size")
    batch = int_value(bs)
    if free is None or bs is None or batch is None or batch < 1 or not f.device_total:
        return []
    if free < 0.25 * f.device_total or f.oom is not None:
        return []
    fwd = f.moments.get("forward_end") or {}
    per_sample = (f.activations + (fwd.get("other", f.other) if f.other_known else 0)) / batch
    if per_sample <= 0:
        return []
    fits = batch + int(0.8 * free / per_sample)
    if fits < 2 * batch:
        return []
    new = 2 * batch
    args = cmdline.set_value(f.args, bs, str(new))
    ga = f.roles.get("gradient_accumulation")
    accum = int_value(ga) or 1
    note = "larger batch: fewer optimizer steps per epoch (retune the learning rate)"
    if ga is not None and accum >= 2 and accum % 2 == 0:
        args = cmdline.set_value(args, ga, str(accum // 2))
        note = "same effective batch with half the accumulation: faster steps"
    saving, assumption = batch_change(f, 2.0, accumulate=False)
    extra = max(0, -saving)
    change, argv = cmd(f, args)
    where = "RAM" if f.info.device_kind == "cpu" else "the device"
    return [
        Suggestion(
            "headroom",
            f"grow the batch {batch} → {new} ({f'fits up to ≈{fits}' if fits <= 16 * batch else 'fits over 16× more'})",
            f"{fmt_bytes(free)} of {where} ({fmt_pct(100 * free / f.device_total)}) is never used",
            -extra,
            (f"uses ≈{fmt_bytes(extra)} more at the peak" if extra else "the peak does not rise (it is at the optimizer step)") + f"; {note}",
            change,
            "medium",
            "activations",
            argv,
            assumption=whatif.joined(assumption, "20% of the free memory is kept as margin"),
        )
    ]


def costly_saving_off(f: Facts) -> list[Suggestion]:
    free = free_bytes(f)
    if free is None or not f.device_total or f.level > PLENTIFUL * f.device_total or f.oom is not None:
        return []
    out: list[Suggestion] = []
    gc = f.roles.get("gradient_checkpointing")
    if gc is not None and is_on(gc) and f.activations > 0:
        out.extend(_checkpointing_off(f, gc, free))
    hp = f.roles.get("half_precision")
    if hp is not None and hp.kind == "bool" and is_on(hp):
        halves = [t for t in f.large if t.category == "parameters" and t.dtype in ("torch.float16", "torch.bfloat16")]
        grown = sum(t.bytes for t in halves) * 3  # back to fp32: tensor, grad and Adam state double
        if halves and grown < 0.8 * free:
            change, argv = cmd(f, cmdline.set_bool(f.args, hp, False))
            out.append(
                Suggestion(
                    "costly_saving_off",
                    f"turn {hp.flag} off (full fp32 precision)",
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
    if dt is not None and str(dt.value).lower() in ("fp16", "float16", "16", "16-mixed"):
        choice = next((c for c in dt.choices or [] if str(c).lower() in BF16_NAMES), None)
        if choice is not None:
            change, argv = cmd(f, cmdline.set_value(f.args, dt, str(choice)))
            out.append(
                Suggestion(
                    "costly_saving_off",
                    f"{dt.flag} {dt.value} → {choice}",
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


def _checkpointing_off(f: Facts, gc: FlagEntry, free: int) -> list[Suggestion]:
    """The activations measured at the end of the forward pass grow back; the peak is recomputed
    over both moments, so a run whose peak checkpointing moved to the optimizer step may lose
    little or nothing at the peak."""
    grown, basis = uncheckpointed_activations(f)

    def change(point: str, m: whatif.Moment) -> dict[str, float]:
        return {**m, "activations": grown} if whatif.is_forward(point) else dict(m)

    saving, where = whatif.saving(f, change)
    extra = max(0, -saving)
    if extra >= 0.8 * free:
        return []
    args = cmdline.set_bool(f.args, gc, False)
    new_cmd, argv = cmd(f, args)
    at_step_end = f.peak_point != "forward_end"
    reason = f"the peak is {fmt_pct(100 * f.level / f.device_total)} of the device" if f.device_total else "memory is plentiful"
    if at_step_end:
        reason += "; with checkpointing the peak is at the optimizer step, not in the forward pass"
    return [
        Suggestion(
            "costly_saving_off",
            "turn gradient checkpointing off",
            reason + "; checkpointing recomputes every block",
            -extra,
            (f"uses ≈{fmt_bytes(extra)} more at the peak" if extra else "the peak does not rise") + "; steps ≈25-35% faster",
            new_cmd,
            "low",  # how much a block saves per kept input byte varies with the block (≈8-11× measured)
            "activations",
            argv,
            assumption=whatif.joined(basis, where, f"estimate of {peak_basis(f)}"),
        )
    ]
