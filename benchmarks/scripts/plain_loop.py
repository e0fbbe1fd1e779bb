"""The plain PyTorch loop most scripts start from: an MLP on random data, argparse flags for the
batch and gradient accumulation (`--grad-accum K`: K micro-batches per optimizer step).

The advisor's bf16-autocast code change is pre-written behind `VALIDATE_CODE_CHANGE=autocast` so
that benchmarks/advisor_validation.py can apply it as a user would edit the loop.

    python benchmarks/scripts/plain_loop.py --batch-size 256 --grad-accum 2
"""

from __future__ import annotations

import argparse
import contextlib
import os

import torch
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if "autocast" in os.environ.get("VALIDATE_CODE_CHANGE", "") else contextlib.nullcontext()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(args.steps):
        for _ in range(args.grad_accum):
            x = torch.randn(args.batch_size, 256)
            y = torch.randint(10, (args.batch_size,))
            with amp:
                loss = nn.functional.cross_entropy(model(x), y) / args.grad_accum
            loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
