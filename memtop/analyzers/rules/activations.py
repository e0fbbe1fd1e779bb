"""Rules that shrink what the forward pass saves for backward: mixed precision, gradient
checkpointing, a smaller micro-batch (with accumulation, or honestly without), fewer frames, lower
resolution. Each estimate is the fall of the step's peak: the activations shrink at the end of the
forward pass, and the peak is recomputed as the larger of that moment and the optimizer step."""

from __future__ import annotations

from memtop.analyzers import cmdline, whatif
from memtop.analyzers.estimates import autocast_saving, checkpoint_saving, scaling_share
from memtop.analyzers.facts import Facts
from memtop.analyzers.roles import BF16_NAMES, bf16_name, int_value, is_on
from memtop.analyzers.rules.common import amp_state, cmd, forward_only, no_flag, of_peak, peak_basis, worth
from memtop.analyzers.suggestion import Suggestion


def _drop_activations(nbytes: int, other_extra: int = 0) -> whatif.Change:
    def change(point: str, m: whatif.Moment) -> dict[str, float]:
        if not whatif.is_forward(point):
            return dict(m)
        return {**m, "activations": max(0, m["activations"] - nbytes), "other": m["other"] + other_extra}

    return change


def mixed_precision(f: Facts) -> list[Suggestion]:
    a = f.activations
    if a <= 0 or amp_state(f):
        return []
    acts_saving, basis, measured = autocast_saving(f)
    if acts_saving <= 0:
        return []
    saving, where = whatif.saving(f, _drop_activations(acts_saving))
    if not worth(f, saving):
        return []
    assumption = whatif.joined(basis, "parameters, gradients, optimizer state and inputs/temporaries stay as they are", where, f"estimate of {peak_basis(f)}")
    args = list(f.args)
    mp = f.roles.get("mixed_precision")
    dt = f.roles.get("amp_dtype")
    if mp is not None:
        args = cmdline.set_bool(args, mp, True)
    if dt is not None and dt.kind == "choice":
        choice = next((c for c in dt.choices or [] if str(c).lower() in BF16_NAMES), None)
        if choice is not None and str(dt.value).lower() not in BF16_NAMES:
            args = cmdline.set_value(args, dt, str(choice))
    elif dt is not None and mp is None:
        args = cmdline.set_value(args, dt, bf16_name(dt))
    reason = f"activations are {of_peak(f, a)} and are kept in fp32"
    cost = "matmuls in bf16 (loss curves usually match fp32); faster on tensor-core GPUs, may be slower on CPU"
    if args != f.args:
        change, argv = cmd(f, args)
        return [Suggestion("mixed_precision", "train with bf16 autocast", reason, saving, cost, change, "high" if measured else "medium", "activations", argv, assumption=assumption)]
    device = "cpu" if f.info.device_kind == "cpu" else "cuda"
    change = f"in code: wrap the forward pass and loss in `with torch.autocast(device_type=\"{device}\", dtype=torch.bfloat16):` ({no_flag(f, 'mixed-precision')})"
    return [Suggestion("mixed_precision", "train with bf16 autocast", reason, saving, cost, change, "medium", "activations", assumption=assumption)]


def gradient_checkpointing(f: Facts) -> list[Suggestion]:
    """Only for transformer-like models (or an unrecorded model): the kept-input ratio is a
    transformer block's; an LSTM or an MLP has no such blocks to checkpoint."""
    a = f.activations
    gc = f.roles.get("gradient_checkpointing")
    if a <= 0 or (gc is not None and is_on(gc)) or f.model.transformer is False:
        return []
    acts_saving, basis, recompute = checkpoint_saving(f)
    # the recomputed block is alive in backward, which only the allocator peak sees
    saving, where = whatif.saving(f, _drop_activations(acts_saving, recompute if f.has_allocator else 0))
    if not worth(f, saving) or f.share(a) < 0.1:
        return []
    assumption = whatif.joined(basis, where, f"estimate of {peak_basis(f)}")
    reason = f"activations are {of_peak(f, a)}" + (f" in {f.model.describe()}" if f.model.known else "")
    cost = "≈25-35% slower steps (each block's forward runs twice)"
    if gc is not None:
        change, argv = cmd(f, cmdline.set_bool(f.args, gc, True))
        return [Suggestion("gradient_checkpointing", "turn on gradient checkpointing", reason, saving, cost, change, "medium", "activations", argv, assumption=assumption)]
    change = "in code: wrap each repeated block in `torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)` (HF models: `model.gradient_checkpointing_enable()`); " + no_flag(f, "checkpointing")
    return [Suggestion("gradient_checkpointing", "use gradient checkpointing", reason, saving, cost, change, "low", "activations", assumption=assumption)]


ACCUMULATE_SNIPPET = (
    "for i, (x, y) in enumerate(loader):  # the loader yields half the batch\n"
    "    loss = loss_fn(model(x), y) / 2\n"
    "    loss.backward()\n"
    "    if i % 2 == 1:\n"
    "        optimizer.step()\n"
    "        optimizer.zero_grad()"
)


def batch_change(f: Facts, ratio: float, accumulate: bool) -> tuple[int, str]:
    """(peak saving, assumption) of a micro-batch ``ratio`` times as large.

    At the end of the forward pass the activations (and, on CUDA, the inputs and temporaries) scale
    with the micro-batch; with accumulation the gradients of the earlier micro-batches are alive
    there too (as large as at the optimizer step). The optimizer step does not change.
    """
    grads = max([f.gradients, *(m["gradients"] for m in f.moments.values())])

    def change(point: str, m: whatif.Moment) -> dict[str, float]:
        if not whatif.is_forward(point):
            return dict(m)
        out = whatif.scaled(m, activations=ratio, other=ratio)
        if accumulate:
            out["gradients"] = max(out["gradients"], grads)
        return out

    saving, where = whatif.saving(f, change)
    parts = ["activations scale linearly with the micro-batch", _inputs_scale(f)]
    if accumulate:
        parts.append("the gradients of the first micro-batch stay alive through the next forward pass")
    parts += [where, f"estimate of {peak_basis(f)}"]
    return saving, whatif.joined(*parts)


def batch_accumulation(f: Facts) -> list[Suggestion]:
    a = f.activations
    if a <= 0 or f.share(a) < 0.1:
        return []
    bs = f.roles.get("batch_size")
    batch = int_value(bs)
    ga = f.roles.get("gradient_accumulation")
    if bs is not None and (batch is None or batch < 2):
        return []
    new_batch = batch // 2 if batch is not None else None
    ratio = new_batch / batch if batch and new_batch else 0.5
    saving, assumption = batch_change(f, ratio, accumulate=True)
    if not worth(f, saving):
        return []
    reason = f"activations are {of_peak(f, a)}" + (f" at batch {batch}" if batch else "") + " and scale with it"
    cost = "same effective batch; slower when the smaller micro-batch underfills the GPU"
    if bs is not None and batch is not None and new_batch is not None and ga is not None:
        accum = int_value(ga) or 1
        args = cmdline.set_value(cmdline.set_value(f.args, bs, str(new_batch)), ga, str(accum * 2))
        change, argv = cmd(f, args)
        note = "" if batch % 2 == 0 else f" (effective batch {batch * accum} → {new_batch * accum * 2}: {batch} is odd)"
        title = f"micro-batch {batch} → {new_batch} with gradient accumulation {accum} → {accum * 2}{note}"
        return [Suggestion("batch_accumulation", title, reason, saving, cost, change, "high", "activations", argv, assumption=assumption)]
    # no accumulation flag: the change is in code (a batch flag alone would halve the effective batch)
    how = f"run with {bs.flag} {new_batch} and " if bs is not None else "halve the batch your DataLoader yields and "
    change = f"in code ({no_flag(f, 'gradient-accumulation')}): {how}step the optimizer every 2 micro-batches:\n{ACCUMULATE_SNIPPET}"
    title = f"micro-batch {batch} → {new_batch}, accumulating gradients over 2 (a code change)" if batch else "halve the micro-batch and accumulate gradients over 2 (a code change)"
    return [Suggestion("batch_accumulation", title, reason, saving, cost, change, "medium" if bs is not None else "low", "activations", assumption=assumption)]


def smaller_batch(f: Facts) -> list[Suggestion]:
    """Where the script has a batch flag but no accumulation flag: the flag alone, saying plainly
    that it halves the effective batch (the same-meaning change is the code change above)."""
    bs = f.roles.get("batch_size")
    batch = int_value(bs)
    a = f.activations
    if bs is None or batch is None or batch < 2 or f.roles.get("gradient_accumulation") is not None or a <= 0 or f.share(a) < 0.1:
        return []
    new_batch = batch // 2
    saving, assumption = batch_change(f, new_batch / batch, accumulate=False)
    if not worth(f, saving):
        return []
    change, argv = cmd(f, cmdline.set_value(f.args, bs, str(new_batch)))
    return [
        Suggestion(
            "smaller_batch",
            f"batch {batch} → {new_batch} (the effective batch halves too)",
            f"activations are {of_peak(f, a)} at batch {batch} and scale with it",
            saving,
            f"changes the training: effective batch {batch} → {new_batch}, twice the optimizer steps per epoch and noisier gradients (retune the learning rate)",
            change,
            "medium",
            "activations",
            argv,
            assumption=assumption,
        )
    ]


def _inputs_scale(f: Facts) -> str:
    return "the inputs and temporaries (other) at the end of the forward pass scale the same way" if f.has_allocator else ""


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
    share, basis = found
    new = n // 2
    factor = 1 - share * (1 - new / n)
    saving, where = whatif.saving(f, forward_only(activations=factor, other=factor))
    if not worth(f, saving):
        return []
    change, argv = cmd(f, cmdline.set_value(f.args, fr, str(new)))
    assumption = whatif.joined(basis + "; they halve with the frames", _inputs_scale(f), where, f"estimate of {peak_basis(f)}")
    return [
        Suggestion(
            "frames",
            f"{fr.flag} {n} → {new}",
            f"activations are {of_peak(f, a)} for {n} frames",
            saving,
            "fewer frames per step: less temporal context each step",
            change,
            "high" if share < 1.0 or f.large else "medium",
            "activations",
            argv,
            assumption=assumption,
        )
    ]


def resolution(f: Facts) -> list[Suggestion]:
    rs = f.roles.get("resolution")
    n = int_value(rs)
    a = f.activations
    if rs is None or n is None or n < 2 or a <= 0:
        return []
    help_text = str(rs.help or "").lower()
    if any(w in help_text for w in ("downscale", "downsample", "factor", "divide")):
        new, side = n * 2, 0.5  # a downscale factor: doubling it halves the side
        sizes: set[int] = set()
    else:
        new, side = n // 2, (n // 2) / n
        sizes = {n, n * n}
    batch = int_value(f.roles.get("batch_size"))
    if batch and sizes:
        sizes |= {n * n * batch, n * batch}
    found = scaling_share(f, sizes, "pixel") if sizes else (1.0, "activations scale with the number of pixels")
    if found is None:
        return []
    share, basis = found
    factor = 1 - share * (1 - side * side)
    saving, where = whatif.saving(f, forward_only(activations=factor, other=factor))
    if not worth(f, saving):
        return []
    change, argv = cmd(f, cmdline.set_value(f.args, rs, str(new)))
    assumption = whatif.joined(basis + "; a quarter of the pixels keeps a quarter of them", _inputs_scale(f), where, f"estimate of {peak_basis(f)}")
    return [
        Suggestion(
            "resolution",
            f"{rs.flag} {n} → {new} (half the side, a quarter of the pixels)",
            f"activations are {of_peak(f, a)} at {rs.flag} {n}",
            saving,
            "lower resolution: less detail learned",
            change,
            "medium",
            "activations",
            argv,
            assumption=assumption,
        )
    ]
