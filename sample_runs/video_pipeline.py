"""Multi-frame video prediction pipeline with marked stages (imitates video / multi-view 3D trainers).

Each step "loads" a batch of clips of ``--max-frames`` synthetic frames (coloured blobs moving on
straight lines over a gradient background, generated from the seed on the CPU and copied to the
device, like a data loader), then runs a staged model:

* ``encode``: a per-frame conv encoder (Conv-BatchNorm-ReLU x 3, stride 4 overall) over all
  ``batch x frames`` frames at once: activations grow linearly with ``--max-frames``;
* ``fuse``: temporal fusion, a residual 3D convolution with a (3, 1, 1) kernel over the time axis
  followed by a softmax attention pooling over frames;
* ``decode``: transposed convolutions back to full resolution, predicting the *next* frame of the
  clip, and an L1 + MSE loss;
* ``backward`` and ``optimizer`` (AdamW, ``zero_grad(set_to_none=True)``).

Every stage runs inside ``with stage("..."):`` where ``stage`` is ``memtop.stage`` when memtop is
installed (it records a ``stage`` record while memtop's profiler is active and does nothing
otherwise) and a no-op context manager when it is not.

CPU:  python sample_runs/video_pipeline.py
GPU:  python sample_runs/video_pipeline.py --max-frames 32 --resolution 256 --batch-size 8 --channels 64 --steps 200
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # samplekit.py lives beside this script
from samplekit import Parser as _Parser  # noqa: E402
from samplekit import positive_int as _positive_int
from samplekit import resolve_device
from samplekit import sync as _sync

try:
    import memtop

    stage: Callable[[str], contextlib.AbstractContextManager[Any]] = memtop.stage
except (ImportError, AttributeError):  # memtop not installed, or an old one without the stage API

    def stage(name: str) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


STAGES = ("load", "encode", "fuse", "decode", "backward", "optimizer")

# ----------------------------------------------------------------------------- command line



def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="video_pipeline.py",
        description="Next-frame prediction on synthetic clips: load / encode / fuse / decode stages.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=_positive_int, default=40, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights and clips)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available")
    p.add_argument("--log-every", type=_positive_int, default=10, help="print a progress line every N steps")
    p.add_argument("--max-frames", type=_positive_int, default=8, help="input frames per clip (>= 2)")
    p.add_argument("--resolution", type=_positive_int, default=32, help="frame width and height (multiple of 4)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="clips per step")
    p.add_argument("--channels", type=_positive_int, default=16, help="encoder base width")
    return p



# ----------------------------------------------------------------------------- data


class ClipSource:
    """Synthetic clips: 3 coloured gaussian blobs moving linearly over a gradient background."""

    def __init__(self, resolution: int, seed: int) -> None:
        self.resolution = resolution
        self.generator = torch.Generator().manual_seed(seed + 1)
        axis = torch.linspace(0.0, 1.0, resolution)
        self.yy, self.xx = torch.meshgrid(axis, axis, indexing="ij")

    def load(self, batch: int, frames: int) -> torch.Tensor:
        """(batch, frames + 1, 3, H, W): the input frames plus the frame to predict."""
        g = self.generator
        blobs = 3
        start = torch.rand(batch, blobs, 2, generator=g) * 0.6 + 0.2
        velocity = (torch.rand(batch, blobs, 2, generator=g) - 0.5) * (0.6 / max(frames, 1))
        color = torch.rand(batch, blobs, 3, generator=g)
        radius = 0.05 + 0.1 * torch.rand(batch, blobs, generator=g)
        t = torch.arange(frames + 1, dtype=torch.float32)
        centre = start[:, None] + velocity[:, None] * t[None, :, None, None]  # (B, T, blobs, 2)
        dx = self.xx[None, None, None] - centre[..., 0, None, None]
        dy = self.yy[None, None, None] - centre[..., 1, None, None]
        weight = torch.exp(-(dx * dx + dy * dy) / (2 * radius[:, None, :, None, None] ** 2))  # (B, T, blobs, H, W)
        frames_rgb = torch.einsum("btkhw,bkc->btchw", weight, color)
        background = 0.2 * torch.stack([self.xx, self.yy, 1 - self.xx], dim=0)
        return (background + frames_rgb).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- model


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class FrameEncoder(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.net = nn.Sequential(conv_bn(3, c, 1), conv_bn(c, 2 * c, 2), conv_bn(2 * c, 4 * c, 2))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, 4c, H/4, W/4)
        return self.net(frames)


class TemporalFusion(nn.Module):
    """Residual temporal 3D conv, then attention pooling over frames (weights from a 1x1 conv)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.temporal = nn.Conv3d(c, c, kernel_size=(3, 1, 1), padding=(1, 0, 0))
        self.norm = nn.BatchNorm3d(c)
        self.score = nn.Conv3d(c, 1, kernel_size=1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, C, T, h, w) -> (B, C, h, w)
        x = feats + F.relu(self.norm(self.temporal(feats)))
        attn = self.score(x).softmax(dim=2)
        return (x * attn).sum(dim=2)


class FrameDecoder(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, last_frame: torch.Tensor) -> torch.Tensor:
        return last_frame + self.net(x)  # predict the change from the last input frame


class VideoPredictor(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.encoder = FrameEncoder(c)
        self.fusion = TemporalFusion(4 * c)
        self.decoder = FrameDecoder(c)


# ----------------------------------------------------------------------------- training



def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_frames < 2:
        parser.error(f"--max-frames must be >= 2, got {args.max_frames}")
    if args.resolution % 4 or args.resolution < 8:
        parser.error(f"--resolution must be a multiple of 4 and >= 8, got {args.resolution}")
    device = resolve_device(parser, args.device)
    torch.manual_seed(args.seed)

    model = VideoPredictor(args.channels).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    source = ClipSource(args.resolution, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    stages = "on" if getattr(stage, "__module__", None) != __name__ else "off (memtop.stage not available)"
    print(f"video_pipeline: {n_params / 1e6:.3f}M params, clips {args.batch_size}x{args.max_frames} frames at "
          f"{args.resolution}x{args.resolution}, device {device}, memtop stages {stages}", flush=True)

    logged: list[float] = []
    clip_shape: tuple[int, ...] = ()
    b, t, r = args.batch_size, args.max_frames, args.resolution
    t_start = t_log = time.perf_counter()
    t_first: float | None = None
    model.train()
    for step in range(1, args.steps + 1):
        with stage("load"):
            clip = source.load(b, t)
            if device.type == "cuda":
                clip = clip.pin_memory()
            clip = clip.to(device, non_blocking=True)
            inputs, target = clip[:, :t], clip[:, t]
            clip_shape = tuple(inputs.shape)
        with stage("encode"):
            feats = model.encoder(inputs.reshape(b * t, 3, r, r))  # all frames of all clips at once
            feats = feats.view(b, t, *feats.shape[1:]).transpose(1, 2)  # (B, C, T, h, w)
        with stage("fuse"):
            fused = model.fusion(feats)
        with stage("decode"):
            pred = model.decoder(fused, inputs[:, -1])
            loss = F.l1_loss(pred, target) + F.mse_loss(pred, target)
        with stage("backward"):
            loss.backward()
        with stage("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if step % args.log_every == 0 or step == args.steps:
            value = loss.item()
            logged.append(value)
            now = time.perf_counter()
            n = args.log_every if step % args.log_every == 0 else step % args.log_every
            ms = (now - t_log) * 1000 / n
            t_log = now
            psnr = -10 * math.log10(max(F.mse_loss(pred.detach(), target).item(), 1e-10))
            print(f"step {step}/{args.steps} loss {value:.5f} | {ms:.1f} ms/step | psnr {psnr:.2f} dB", flush=True)
        if step == 1:
            _sync(device)
            t_first = time.perf_counter()

    _sync(device)
    t_end = time.perf_counter()
    if args.steps > 1 and t_first is not None:
        mean_ms = 1000 * (t_end - t_first) / (args.steps - 1)
    else:
        mean_ms = 1000 * (t_end - t_start) / args.steps
    print(f"done: {args.steps} steps, final loss {logged[-1]:.5f}, {mean_ms:.1f} ms/step (after the first)", flush=True)
    return {
        "steps": args.steps,
        "losses": logged,
        "final_loss": logged[-1],
        "mean_step_ms": mean_ms,
        "clip_shape": clip_shape,
        "params": n_params,
        "device": str(device),
    }


if __name__ == "__main__":
    main()
