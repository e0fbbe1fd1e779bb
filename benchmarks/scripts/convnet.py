"""A conv net with batch norm (ResNet-ish stem and two stages) on random images.

    python benchmarks/scripts/convnet.py --batch-size 32 --image-size 64 --amp
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch import nn


def stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast for forward and loss")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(stage(3, 32), stage(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if args.amp else contextlib.nullcontext()
    for step in range(args.steps):
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
        y = torch.randint(10, (args.batch_size,))
        with amp:
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
