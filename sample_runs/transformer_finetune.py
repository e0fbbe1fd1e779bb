"""Causal-LM fine-tuning of a small GPT-style transformer (imitates a nanoGPT / Hugging Face fine-tune).

The model is a decoder-only transformer: token + position embeddings, ``--n-layers`` pre-LayerNorm
blocks (causal self-attention with separate q/k/v/o projections, then a GELU MLP), a final
LayerNorm and an LM head whose weight *is* the token-embedding weight (tied: one Parameter used
twice). The base weights are randomly initialised from the seed and stand in for a pretrained
checkpoint; nothing is downloaded. The training data are synthetic token sequences from a fixed
random "bigram language" (each token is followed by one of 4 likely successors), generated in
process, so the loss falls from ln(vocab) towards ln(4) and training visibly works. AdamW, a
linear warm-up, gradient clipping, ``zero_grad(set_to_none=True)``.

Memory flags:

``--batch-size``, ``--seq-len``
    activations grow with batch x seq (and with seq^2 for ``--attention naive``).
``--gradient-accumulation-steps K``
    K micro-batches of ``--batch-size`` per optimizer step (effective batch = batch x K); the loss is
    divided by K and ``optimizer.step()`` runs once per K micro-batches. ``--steps`` counts optimizer
    steps, so a run does ``steps x K`` forward/backward passes.
``--amp``, ``--dtype bf16|fp16|fp32``
    ``--amp`` runs forward and loss under ``torch.autocast`` in ``--dtype``. On a CPU autocast is
    bf16 (fp16 is mapped to bf16). fp16 on CUDA uses a ``torch.amp.GradScaler``. ``--dtype fp32``
    (or no ``--amp``) = no autocast.
``--gradient-checkpointing``
    every block runs under ``torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)``:
    only block inputs are saved, activations are recomputed in backward.
``--lora-r R``
    0 (default) = full fine-tune. R > 0 freezes every base weight and adds LoRA adapters (A: R x d,
    B: d x R, B starts at zero) to the attention q and v projections; the optimizer gets only the
    adapters, so gradients and AdamW state shrink to a tiny fraction.
``--leak``
    a deliberate leak for testing leak detection: every step does ``losses.append(loss)`` keeping the
    loss *with its autograd graph*, and ``outputs.append(logits)`` (the common "keep the outputs
    for a metric later" bug). Note that ``backward()`` frees the graph's saved tensors, so the
    kept graph alone costs only a few KB per step; the kept logits (batch x seq x vocab floats per
    micro-batch) are what make memory grow steadily. Off by default.

CPU:  python sample_runs/transformer_finetune.py
GPU:  python sample_runs/transformer_finetune.py --n-layers 12 --d-model 768 --n-heads 12 --vocab-size 32000 \\
          --seq-len 1024 --batch-size 8 --amp --dtype bf16 --steps 200
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # samplekit.py lives beside this script
from samplekit import Parser as _Parser  # noqa: E402
from samplekit import non_negative_int as _non_negative_int
from samplekit import positive_float as _positive_float
from samplekit import positive_int as _positive_int
from samplekit import resolve_device
from samplekit import sync as _sync

# ----------------------------------------------------------------------------- command line



def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="transformer_finetune.py",
        description="Fine-tune a small GPT-style causal transformer on synthetic token data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=_positive_int, default=60, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights and data)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available")
    p.add_argument("--log-every", type=_positive_int, default=10, help="print a progress line every N optimizer steps")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="sequences per micro-batch")
    p.add_argument("--seq-len", type=_positive_int, default=64, help="tokens per sequence")
    p.add_argument("--gradient-accumulation-steps", type=_positive_int, default=1,
                   help="micro-batches per optimizer step (effective batch = batch-size x this)")
    p.add_argument("--amp", action="store_true", help="autocast forward and loss in --dtype")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16",
                   help="autocast dtype with --amp (CPU: bf16; fp16 on CUDA adds a GradScaler)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute each block in backward")
    p.add_argument("--lora-r", type=_non_negative_int, default=0,
                   help="LoRA rank on attention q/v (0 = full fine-tune; >0 freezes the base weights)")
    p.add_argument("--lora-alpha", type=_positive_float, default=16.0, help="LoRA scaling numerator (alpha / r)")
    p.add_argument("--n-layers", type=_positive_int, default=2, help="transformer blocks")
    p.add_argument("--d-model", type=_positive_int, default=128, help="model width")
    p.add_argument("--n-heads", type=_positive_int, default=4, help="attention heads (must divide --d-model)")
    p.add_argument("--vocab-size", type=_positive_int, default=1024, help="vocabulary size (>= 8)")
    p.add_argument("--attention", choices=("sdpa", "naive"), default="sdpa",
                   help="sdpa = F.scaled_dot_product_attention; naive = materialise the seq x seq score matrix")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="peak learning rate; when unset 3e-3 (full) or 1e-2 (LoRA)")
    p.add_argument("--leak", action="store_true", help="deliberate leak: keep every loss (with graph) and logits")
    return p



# ----------------------------------------------------------------------------- model


class LoRALinear(nn.Module):
    """y = base(x) + (x A^T B^T) * alpha / r with the base Linear frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.scaling = alpha / r
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scaling


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, naive: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.naive = naive
        self.q_proj: nn.Module = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj: nn.Module = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q = self.q_proj(x).view(b, t, h, d // h).transpose(1, 2)
        k = self.k_proj(x).view(b, t, h, d // h).transpose(1, 2)
        v = self.v_proj(x).view(b, t, h, d // h).transpose(1, 2)
        if self.naive:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            y = scores.masked_fill(mask, float("-inf")).softmax(dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, naive: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, naive)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, d_model: int, n_heads: int, n_layers: int,
                 naive_attention: bool = False) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, naive_attention) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied weights: one Parameter, two uses
        self.gradient_checkpointing = False
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.lm_head(self.ln_f(x))


def add_lora(model: GPT, r: int, alpha: float) -> None:
    """Freeze the whole model, then give every attention q and v projection a trainable LoRA adapter."""
    model.requires_grad_(False)
    for block in model.blocks:
        attn = block.attn
        assert isinstance(attn, CausalSelfAttention)
        assert isinstance(attn.q_proj, nn.Linear) and isinstance(attn.v_proj, nn.Linear)
        attn.q_proj = LoRALinear(attn.q_proj, r, alpha)
        attn.v_proj = LoRALinear(attn.v_proj, r, alpha)


def build_model(args: argparse.Namespace, device: torch.device) -> GPT:
    model = GPT(args.vocab_size, args.seq_len, args.d_model, args.n_heads, args.n_layers,
                naive_attention=args.attention == "naive").to(device)
    if args.lora_r > 0:
        add_lora(model, args.lora_r, args.lora_alpha)
    model.gradient_checkpointing = args.gradient_checkpointing
    return model


# ----------------------------------------------------------------------------- data


class BigramData:
    """Token sequences from a fixed random bigram language: each token has 4 likely successors."""

    def __init__(self, vocab_size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed + 1)
        self.successors = torch.randint(0, vocab_size, (vocab_size, 4), generator=g)
        self.vocab_size = vocab_size
        self.generator = torch.Generator().manual_seed(seed + 2)

    def batch(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator
        tokens = torch.empty(batch_size, seq_len + 1, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, self.vocab_size, (batch_size,), generator=g)
        choice = torch.randint(0, 4, (batch_size, seq_len), generator=g)
        for t in range(seq_len):
            tokens[:, t + 1] = self.successors[tokens[:, t], choice[:, t]]
        return tokens[:, :-1], tokens[:, 1:]


# ----------------------------------------------------------------------------- training


def autocast_dtype(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    """The dtype autocast runs in, or None for no autocast."""
    if not args.amp or args.dtype == "fp32":
        return None
    if device.type == "cpu":
        return torch.bfloat16
    return torch.bfloat16 if args.dtype == "bf16" else torch.float16


def lm_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
            amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and cross-entropy loss (under autocast when amp_dtype is set). Returns (loss, logits)."""
    ctx = torch.autocast(inputs.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with ctx:
        logits = model(inputs)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.reshape(-1))
    return loss, logits


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) over unique parameters (the tied embedding counts once)."""
    params = list(model.parameters())  # nn.Module.parameters() already de-duplicates shared Parameters
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)



def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.d_model % args.n_heads:
        parser.error(f"--n-heads {args.n_heads} must divide --d-model {args.d_model}")
    if args.vocab_size < 8:
        parser.error(f"--vocab-size must be >= 8, got {args.vocab_size}")
    device = resolve_device(parser, args.device)
    torch.manual_seed(args.seed)

    model = build_model(args, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = args.lr if args.lr is not None else (1e-2 if args.lora_r else 3e-3)
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, min(10, args.steps // 5))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    amp_dtype = autocast_dtype(args, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    data = BigramData(args.vocab_size, args.seed)
    accum = args.gradient_accumulation_steps

    n_train, n_total = count_parameters(model)
    mode = f"LoRA r={args.lora_r}" if args.lora_r else "full fine-tune"
    print(f"transformer_finetune: {n_total / 1e6:.2f}M params ({n_train / 1e6:.3f}M trainable, {mode}), "
          f"{args.n_layers} layers d={args.d_model}, batch {args.batch_size}x{accum} seq {args.seq_len}, "
          f"autocast {amp_dtype}, checkpointing {args.gradient_checkpointing}, device {device}", flush=True)
    if args.amp and device.type == "cpu" and args.dtype == "fp16":
        print("note: CPU autocast runs in bf16 (fp16 requested)", flush=True)

    losses: list[torch.Tensor] = []  # --leak: kept with their graphs
    outputs: list[torch.Tensor] = []  # --leak: kept logits
    logged: list[float] = []
    micro_batches = 0
    optimizer_steps = 0
    t_start = t_log = time.perf_counter()
    t_first: float | None = None
    model.train()
    for step in range(1, args.steps + 1):
        step_loss = torch.zeros((), device=device)
        for _ in range(accum):
            inputs, targets = data.batch(args.batch_size, args.seq_len)
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            loss, logits = lm_loss(model, inputs, targets, amp_dtype)
            scaler.scale(loss / accum).backward()
            micro_batches += 1
            step_loss += loss.detach() / accum
            if args.leak:
                losses.append(loss)  # the bug: the loss keeps its autograd graph
                outputs.append(logits)  # ... and the logits stay alive
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        optimizer_steps += 1

        if step % args.log_every == 0 or step == args.steps:
            value = step_loss.item()
            logged.append(value)
            now = time.perf_counter()
            n = args.log_every if step % args.log_every == 0 else step % args.log_every
            ms = (now - t_log) * 1000 / n
            t_log = now
            extra = f" | leaked {len(outputs)} logits" if args.leak else ""
            print(f"step {step}/{args.steps} loss {value:.4f} | {ms:.1f} ms/step | lr {scheduler.get_last_lr()[0]:.2e}"
                  f"{extra}", flush=True)
        if step == 1:
            _sync(device)
            t_first = time.perf_counter()

    _sync(device)
    t_end = time.perf_counter()
    if args.steps > 1 and t_first is not None:
        mean_ms = 1000 * (t_end - t_first) / (args.steps - 1)
    else:
        mean_ms = 1000 * (t_end - t_start) / args.steps
    print(f"done: {args.steps} steps ({micro_batches} micro-batches), final loss {logged[-1]:.4f}, "
          f"{mean_ms:.1f} ms/step (after the first)", flush=True)
    return {
        "steps": args.steps,
        "losses": logged,
        "final_loss": logged[-1],
        "mean_step_ms": mean_ms,
        "optimizer_steps": optimizer_steps,
        "micro_batches": micro_batches,
        "trainable_params": n_train,
        "total_params": n_total,
        "optimizer_state_tensors": sum(len(s) for s in optimizer.state.values()),
        "autocast_dtype": str(amp_dtype) if amp_dtype else None,
        "grad_scaler": scaler.is_enabled(),
        "leaked_tensors": len(losses) + len(outputs),
        "leaked_bytes": sum(t.numel() * t.element_size() for t in outputs),
        "tied_weights": model.lm_head.weight is model.tok_emb.weight,
        "device": str(device),
    }


if __name__ == "__main__":
    main()
