"""Fit one high-resolution image with a coordinate MLP (imitates SIREN / Fourier-feature / NeRF-style fitting).

The network maps pixel coordinates (x, y) in [-1, 1]^2 to RGB. ``--encoding siren`` (default) is a
SIREN (sine activations, w0 = 30, the SIREN initialisation); ``--encoding fourier`` is a ReLU MLP
on random Fourier features. The target is a procedural image generated in process (rings, a
checkerboard and colour gradients), so nothing is downloaded. Each step evaluates the MLP on every
pixel (``--batch-pixels 0``) or on a random subset of pixels, MSE loss, Adam; PSNR is printed.

Memory: activations are ``pixels x hidden x layers``, so ``--resolution`` (pixels = resolution^2)
is the knob that runs a GPU out of memory; ``--batch-pixels`` bounds it. ``--use-amp`` runs the
forward under ``torch.autocast`` (fp16 with a ``torch.amp.GradScaler`` on CUDA, bf16 on a CPU),
halving most saved activations.

CPU:  python sample_runs/image_fit.py
GPU:  python sample_runs/image_fit.py --resolution 1024 --hidden 256 --layers 5 --steps 300
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
        prog="image_fit.py",
        description="Fit a synthetic image with a coordinate MLP (SIREN or Fourier features).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=_positive_int, default=50, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, Fourier features, pixel batches)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available")
    p.add_argument("--log-every", type=_positive_int, default=10, help="print a progress line every N steps")
    p.add_argument("--resolution", type=_positive_int, default=64, help="image width and height")
    p.add_argument("--hidden", type=_positive_int, default=128, help="hidden width")
    p.add_argument("--layers", type=_positive_int, default=3, help="hidden layers")
    p.add_argument("--batch-pixels", type=_non_negative_int, default=0,
                   help="random pixels per step (0 = every pixel)")
    p.add_argument("--encoding", choices=("siren", "fourier"), default="siren", help="network type")
    p.add_argument("--use-amp", action="store_true",
                   help="autocast the forward: fp16 + GradScaler on CUDA, bf16 on CPU")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="Adam learning rate; when unset 1e-4 (siren) or 1e-3 (fourier)")
    return p



# ----------------------------------------------------------------------------- data


def make_grid(resolution: int, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1]^2, shape (resolution^2, 2), row-major (y, x)."""
    axis = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution * 2 - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=-1)


def make_image(coords: torch.Tensor) -> torch.Tensor:
    """A procedural RGB image with detail at several scales: rings, a checkerboard, gradients. (P, 3)."""
    x, y = coords[:, 0], coords[:, 1]
    r = torch.sqrt(x * x + y * y)
    rings = 0.5 + 0.5 * torch.cos(12 * math.pi * r)
    checker = ((torch.floor((x + 1) * 4) + torch.floor((y + 1) * 4)) % 2).float()
    red = 0.6 * rings + 0.4 * (x + 1) / 2
    green = 0.5 * checker + 0.5 * (y + 1) / 2
    blue = 0.5 + 0.5 * torch.sin(3 * math.pi * x) * torch.cos(2 * math.pi * y) * (r < 0.8)
    return torch.stack([red, green, blue], dim=-1).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- models


class SineLayer(nn.Module):
    def __init__(self, cin: int, cout: int, w0: float, first: bool) -> None:
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(cin, cout)
        bound = 1.0 / cin if first else math.sqrt(6.0 / cin) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * self.linear(x))


class Siren(nn.Module):
    def __init__(self, hidden: int, layers: int, w0: float = 30.0) -> None:
        super().__init__()
        blocks = [SineLayer(2, hidden, w0, first=True)]
        blocks += [SineLayer(hidden, hidden, w0, first=False) for _ in range(layers - 1)]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden, 3)
        bound = math.sqrt(6.0 / hidden) / w0
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(coords)) + 0.5


class FourierMLP(nn.Module):
    def __init__(self, hidden: int, layers: int, features: int = 128, scale: float = 10.0) -> None:
        super().__init__()
        self.b: torch.Tensor
        self.register_buffer("b", torch.randn(2, features) * scale)
        dims = [2 * features] + [hidden] * layers
        mods: list[nn.Module] = []
        for cin, cout in zip(dims[:-1], dims[1:], strict=True):
            mods += [nn.Linear(cin, cout), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*mods)
        self.head = nn.Linear(hidden, 3)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * coords @ self.b
        return torch.sigmoid(self.head(self.body(torch.cat([proj.sin(), proj.cos()], dim=-1))))


# ----------------------------------------------------------------------------- training


def autocast_dtype(use_amp: bool, device: torch.device) -> torch.dtype | None:
    if not use_amp:
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16



def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    torch.manual_seed(args.seed)

    coords = make_grid(args.resolution, device)
    target = make_image(coords)
    n_pixels = coords.shape[0]
    batch = n_pixels if args.batch_pixels == 0 else min(args.batch_pixels, n_pixels)
    network = Siren if args.encoding == "siren" else FourierMLP
    model = network(args.hidden, args.layers).to(device)
    lr = args.lr if args.lr is not None else (1e-4 if args.encoding == "siren" else 1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    amp_dtype = autocast_dtype(args.use_amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    sampler = torch.Generator(device=device).manual_seed(args.seed + 1)
    print(f"image_fit: {args.encoding} {args.layers}x{args.hidden}, {args.resolution}x{args.resolution} image "
          f"({n_pixels} pixels, {batch} per step), autocast {amp_dtype}, device {device}", flush=True)

    logged: list[float] = []
    psnrs: list[float] = []
    out_dtype: str = ""
    t_start = t_log = time.perf_counter()
    t_first: float | None = None
    model.train()
    for step in range(1, args.steps + 1):
        if batch < n_pixels:
            idx = torch.randint(0, n_pixels, (batch,), device=device, generator=sampler)
            x, y = coords[idx], target[idx]
        else:
            x, y = coords, target
        ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with ctx:
            pred = model(x)
        out_dtype = str(pred.dtype)
        loss = F.mse_loss(pred.float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        if step % args.log_every == 0 or step == args.steps:
            value = loss.item()
            logged.append(value)
            psnr = -10 * math.log10(max(value, 1e-10))
            psnrs.append(psnr)
            now = time.perf_counter()
            n = args.log_every if step % args.log_every == 0 else step % args.log_every
            ms = (now - t_log) * 1000 / n
            t_log = now
            print(f"step {step}/{args.steps} loss {value:.6f} | {ms:.1f} ms/step | psnr {psnr:.2f} dB", flush=True)
        if step == 1:
            _sync(device)
            t_first = time.perf_counter()

    _sync(device)
    t_end = time.perf_counter()
    if args.steps > 1 and t_first is not None:
        mean_ms = 1000 * (t_end - t_first) / (args.steps - 1)
    else:
        mean_ms = 1000 * (t_end - t_start) / args.steps
    print(f"done: {args.steps} steps, final loss {logged[-1]:.6f} (psnr {psnrs[-1]:.2f} dB), "
          f"{mean_ms:.1f} ms/step (after the first)", flush=True)
    return {
        "steps": args.steps,
        "losses": logged,
        "final_loss": logged[-1],
        "psnr": psnrs[-1],
        "mean_step_ms": mean_ms,
        "pixels_per_step": batch,
        "output_dtype": out_dtype,
        "autocast_dtype": str(amp_dtype) if amp_dtype else None,
        "grad_scaler": scaler.is_enabled(),
        "device": str(device),
    }


if __name__ == "__main__":
    main()
