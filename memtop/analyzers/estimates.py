"""The advisor's arithmetic: how many bytes a change gives back, from the run's measured figures.

Every function returns ``(bytes, assumption)``; the assumption is shown next to the estimate. The
inputs are the composition at the peak and the largest tensors the hook listed there (name, autograd
node, shape, dtype), which say which saved tensors a change would touch.
"""

from __future__ import annotations

import re

from memtop.analyzers.facts import Facts
from memtop.analyzers.roles import int_value
from memtop.runs.records import LargeTensor
from memtop.units import fmt_bytes, fmt_pct

FP32 = ("torch.float32", "float32", "torch.float", "float")

# Saved tensors that autocast turns into bf16/fp16: the inputs of matmuls, convolutions and
# attention, and what the ops after them save, since they run on a half-precision output:
# elementwise activations, batch norm and pooling (a conv net is half precision from its first
# convolution on). Layer norm stays: in a transformer its input is the fp32 residual stream.
_HALVED_NODES = re.compile(
    r"^saved\[(Addmm|Mm|Bmm|Baddbmm|Addbmm|Matmul|Linear|Convolution|Conv\w*|\w*Attention\w*|"
    r"Gelu|Relu|Silu|Sin|Cos|Tanh|Sigmoid|Softplus|Elu|LeakyRelu|Hardswish|Mish|Glu|"
    r"Native(Batch)?Norm|CudnnBatchNorm|MiopenBatchNorm|\w*BatchNorm\w*|\w*MaxPool\w*|\w*AvgPool\w*)Backward\d*\]"
)
# Saved tensors outside any repeated block: the loss and the logits feeding it.
_OUTSIDE_BLOCKS = re.compile(r"^saved\[(NllLoss|LogSoftmax|\w*CrossEntropy\w*|MseLoss|L1Loss)\w*\]")

TYPICAL_HALVED_SHARE = 0.65  # of fp32 saved bytes, when no saved tensor was large enough to show its node
CHECKPOINT_KEPT_RATIO = 8.0  # a transformer-like block saves ≈8x its input for backward
_EMBED = re.compile(r"(^|\.)(embed\w*|wte|wpe|tok_embeddings|word_embeddings|position_embeddings)(\.|$)")
_HEAD = re.compile(r"(^|\.)(lm_head|output|classifier|head)(\.|$)")


def is_fp32(dtype: str) -> bool:
    return dtype in FP32


def listed_activations(f: Facts) -> list[LargeTensor]:
    return [t for t in f.large if t.category == "activations"]


def autocast_saving(f: Facts) -> tuple[int, str, bool]:
    """(bytes, assumption, measured?) bf16/fp16 autocast takes off the saved activations.

    Saved inputs of matmuls/convolutions/attention and of the activation functions after them are
    halved; losses, log-softmax and normalization inputs stay fp32. The share is read off the listed
    saved tensors; autocast also keeps half-precision copies of the matmul weights for backward.
    """
    a = f.activations
    acts = listed_activations(f)
    listed = sum(t.bytes for t in acts)
    if listed:
        halved = sum(t.bytes for t in acts if is_fp32(t.dtype) and _HALVED_NODES.match(t.name))
        share, measured = halved / listed, True
        basis = f"{fmt_pct(100 * share)} of the saved bytes are fp32 inputs of matmuls/convolutions/attention or of the activations after them (read off the {len(acts)} largest saved tensors)"
    else:
        share, measured = TYPICAL_HALVED_SHARE, False
        basis = f"≈{TYPICAL_HALVED_SHARE:.0%} of the saved bytes are matmul/activation inputs (typical; no saved tensor was large enough to list)"
    copies = matmul_weight_bytes(f) // 2
    saving = int(share * a / 2) - copies
    assumption = f"{basis}; those halve, losses and normalization inputs stay fp32; bf16 copies of {fmt_bytes(copies * 2)} of matmul weights are kept for backward"
    return saving, assumption, measured


def matmul_weight_bytes(f: Facts) -> int:
    """fp32 parameter bytes that matmuls use (autocast caches a half copy of each for backward).

    Listed 1-D parameters (biases, norms) and embeddings that are not tied to an output head are
    left out; parameters too small to be listed are assumed to be matmul weights.
    """
    params = [t for t in f.large if t.category == "parameters"]
    has_head = any(_HEAD.search(t.name) for t in params)
    excluded = sum(t.bytes for t in params if len(t.shape) < 2 or (has_head and _EMBED.search(t.name)) or not is_fp32(t.dtype))
    return max(0, f.parameters - excluded)


def block_count(f: Facts) -> tuple[int | None, str]:
    n = int_value(f.roles.get("num_layers"))
    if n and n > 0:
        return n, f"{f.roles['num_layers'].flag} {n}"
    idx = {int(m.group(2)) for t in f.large if (m := re.search(r"\.(layers|layer|h|blocks|block)\.(\d+)\.", t.name))}
    if idx:
        return max(idx) + 1, "the layer names of the largest tensors"
    return None, ""


def checkpoint_saving(f: Facts) -> tuple[int, str, int]:
    """(bytes checkpointing every block takes off the activations at the end of forward,
    assumption, bytes one block's recomputation adds back in backward).

    The loss/logits tensors are outside the blocks and stay; of the blocks' saved tensors only each
    block's input stays (≈1/CHECKPOINT_KEPT_RATIO of them for transformer-like blocks). Backward
    recomputes one block at a time, which adds ≈1/L of the blocks' activations back at that moment.
    """
    a = f.activations
    outside = sum(t.bytes for t in listed_activations(f) if _OUTSIDE_BLOCKS.match(t.name))
    blocks_bytes = max(0, a - outside)
    saving = int(blocks_bytes * (1 - 1 / CHECKPOINT_KEPT_RATIO))
    assumption = (
        (f"the loss/logits tensors ({fmt_bytes(outside)}) stay; " if outside else "")
        + f"a block saves ≈{CHECKPOINT_KEPT_RATIO:g}× its input, so ≈1/{CHECKPOINT_KEPT_RATIO:g} of the blocks' {fmt_bytes(blocks_bytes)} stays"
    )
    blocks, source = block_count(f)
    recompute = 0
    if blocks:
        recompute = int(blocks_bytes / blocks)
        assumption += f"; {blocks} blocks (from {source}): recomputing one in backward briefly adds ≈{fmt_bytes(recompute)}"
    return saving, assumption, recompute


def uncheckpointed_activations(f: Facts) -> tuple[int, str]:
    """(saved activations at the end of forward without checkpointing, assumption), from the
    activations measured with it: the kept block inputs grow ≈CHECKPOINT_KEPT_RATIO×, the
    loss/logits tensors outside the blocks stay as they are."""
    a = f.activations
    outside = sum(t.bytes for t in listed_activations(f) if _OUTSIDE_BLOCKS.match(t.name))
    kept = max(0, a - outside)
    grown = outside + int(kept * CHECKPOINT_KEPT_RATIO)
    return grown, (
        (f"the loss/logits tensors ({fmt_bytes(outside)}) stay; " if outside else "")
        + f"without checkpointing a block keeps ≈{CHECKPOINT_KEPT_RATIO:g}× the input it keeps now ({fmt_bytes(kept)})"
    )


def scaling_share(f: Facts, sizes: set[int], what: str) -> tuple[float, str] | None:
    """Share of the activations that scale with a dimension (frames, pixels, batch).

    Read off the listed saved tensors: those with a dimension in ``sizes`` scale, the others do not.
    None when listed tensors exist but none has such a dimension (the flag does not drive them).
    """
    acts = listed_activations(f)
    listed = sum(t.bytes for t in acts)
    if not listed:
        return 1.0, f"activations scale linearly with the {what} (no saved tensor was large enough to check its shape)"
    matched = sum(t.bytes for t in acts if sizes & set(t.shape))
    if matched == 0:
        return None
    share = matched / listed
    return share, f"{fmt_pct(100 * share)} of the saved bytes have a {what} dimension (read off the {len(acts)} largest saved tensors) and scale with it"


def tensor_family(f: Facts, name: str) -> tuple[int, int, int, list[str]]:
    """(param, grad, optimizer-state) bytes of one named parameter at the peak, from the listed tensors."""
    p = sum(t.bytes for t in f.large if t.name == name and t.category == "parameters")
    g = sum(t.bytes for t in f.large if t.name == f"{name}.grad")
    prefix = f"optimizer.state[{name}]"
    o = sum(t.bytes for t in f.large if t.name.startswith(prefix) and is_fp32(t.dtype) and len(t.shape) > 0)
    assumed: list[str] = []
    if g == 0 and f.gradients >= p > 0:
        g = p
        assumed.append("its gradient is as large as the tensor")
    if o == 0 and f.optimizer_state >= 2 * p > 0:
        o = 2 * p
        assumed.append("Adam keeps two states as large as the tensor")
    return p, g, o, assumed
