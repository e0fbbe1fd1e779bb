"""A small MLP whose activations grow with --batch-size, for `memtop fit` tests.

--crash-at N raises an error at batch size N; --oom-at N asks for an impossible allocation at
batch sizes >= N (the CPU allocator refuses it: an out-of-memory error, as on a card).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=8, help="samples per step")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--crash-at", type=int, default=0)
    p.add_argument("--oom-at", type=int, default=0)
    args = p.parse_args()
    if args.batch_size > 64:
        p.error("--batch-size must be at most 64")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.steps):
        if args.crash_at and args.batch_size == args.crash_at:
            raise RuntimeError("deliberate crash for the test")
        if args.oom_at and args.batch_size >= args.oom_at:
            torch.empty(1 << 50, dtype=torch.uint8)
        x = torch.randn(args.batch_size, 256)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
