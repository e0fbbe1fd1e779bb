"""A PyTorch Lightning-shaped script without lightning: a `LightningModule`-like class
(`training_step`, `configure_optimizers`) run by a small `Trainer` (`max_steps`,
`accumulate_grad_batches`, `precision="32"|"bf16-mixed"`), configured from argparse flags as
Lightning CLIs usually are. A small conv classifier on random images, CPU-fast.

    python benchmarks/scripts/lightning_style.py --batch_size 32 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class LitClassifier(nn.Module):
    """The LightningModule: the model, its loss, its optimizer."""

    def __init__(self, width: int, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, 10),
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class Trainer:
    def __init__(self, max_steps: int, accumulate_grad_batches: int = 1, precision: str = "32") -> None:
        self.max_steps, self.accumulate, self.precision = max_steps, accumulate_grad_batches, precision

    def fit(self, module: LitClassifier, batch_size: int, image_size: int) -> None:
        opt = module.configure_optimizers()
        gen = torch.Generator().manual_seed(0)
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16-mixed" else contextlib.nullcontext()
        for step in range(self.max_steps):
            for i in range(self.accumulate):
                x = torch.randn(batch_size, 3, image_size, image_size, generator=gen)
                y = torch.randint(10, (batch_size,), generator=gen)
                with amp:
                    loss = module.training_step((x, y), i) / self.accumulate
                loss.backward()
            opt.step()
            opt.zero_grad()
            if step % 10 == 0:
                print(f"step {step}: loss {loss.item():.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--accumulate_grad_batches", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--precision", choices=["32", "bf16-mixed"], default="32", help="Lightning precision: 32 or bf16-mixed autocast")
    ap.add_argument("--image_size", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--max_steps", type=int, default=40)
    args = ap.parse_args()
    torch.manual_seed(0)
    Trainer(args.max_steps, args.accumulate_grad_batches, args.precision).fit(LitClassifier(args.width, 1e-3), args.batch_size, args.image_size)


if __name__ == "__main__":
    main()
