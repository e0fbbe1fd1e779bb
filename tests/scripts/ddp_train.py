"""Two-rank DDP on CPU (gloo) for the torchrun test: each rank must write its own rank<N>.jsonl."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 8)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(4):
        x = torch.randn(16 * (dist.get_rank() + 1), 64)
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
