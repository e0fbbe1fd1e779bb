"""A plain loop with a batch flag and *no* accumulation flag: the advisor must not pretend that
`--batch-size 128` keeps the training's meaning. SGD with momentum (no Adam state).

The advisor's code changes are pre-written behind `VALIDATE_CODE_CHANGE` (comma-separated:
`accumulate` = two micro-batches per optimizer step, `autocast` = bf16 autocast) so that
benchmarks/advisor_validation.py can apply them as a user would edit the loop.

    python benchmarks/scripts/plain_loop_noaccum.py --batch-size 256
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
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    code = set(filter(None, os.environ.get("VALIDATE_CODE_CHANGE", "").split(",")))
    micro = 2 if "accumulate" in code else 1
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if "autocast" in code else contextlib.nullcontext()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(args.steps):
        for _ in range(micro):
            x = torch.randn(args.batch_size, 256)
            y = torch.randint(10, (args.batch_size,))
            with amp:
                loss = nn.functional.cross_entropy(model(x), y) / micro
            loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
