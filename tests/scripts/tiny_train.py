"""A tiny, deterministic training script for the profiler's end-to-end tests."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(512, 64)
        self.body = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.head = nn.Linear(64, 512, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(self.embed(x)))
        return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--explicit", action="store_true", help="use memtop.profile() instead of the zero-code hook")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--oom", action="store_true", help="ask for an impossible allocation after 2 steps")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep per step")
    p.add_argument("--fail-at-import", action="store_true")
    p.add_argument("--dump-truth", default=None, help="write the independent ground truth here (json)")
    args = p.parse_args(argv)
    if args.fail_at_import:
        raise ImportError("this script fails at import on purpose")
    torch.manual_seed(0)
    model = Tied()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctx = None
    if args.explicit:
        import memtop

        ctx = memtop.profile(model, optimizer, runs_dir=args.runs_dir)
        ctx.__enter__()
    for step in range(args.steps):
        x = torch.randint(0, 512, (16, 32))
        out = model(x)
        loss = nn.functional.cross_entropy(out.reshape(-1, 512), x.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.sleep:
            time.sleep(args.sleep)
        print(f"step {step + 1} loss {loss.item():.4f}", flush=True)
        if args.oom and step == 1:
            torch.empty(1 << 50, dtype=torch.uint8)  # 1 PiB: the CPU allocator refuses at once
    if ctx is not None:
        ctx.__exit__(None, None, None)
    if args.dump_truth:
        uniq = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
        truth = {"parameters": sum(t.numel() * t.element_size() for t in uniq.values())}
        with open(args.dump_truth, "w") as fh:
            json.dump(truth, fh)
    sys.exit(0)


if __name__ == "__main__":
    main()
