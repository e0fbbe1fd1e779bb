"""Gaussian-splatting-style scene fitting (imitates a 3D Gaussian Splatting trainer such as 3DGS/gsplat).

A scene is a cloud of N anisotropic 3D gaussians, each with a position, a scale (log), a rotation
(quaternion), an opacity (logit) and view-dependent colour as spherical-harmonics (SH) coefficients,
``(sh_degree + 1) ** 2 * 3`` floats per gaussian. At degree 3 that is 48 of the 59 floats of a
gaussian, so the SH tensor (and its gradient and two Adam moments) dominates memory, as in 3DGS.

Each step picks one of a few cameras orbiting the scene, culls the gaussians outside its view (a
different, data-dependent number every step, so temporaries change size), projects the rest with
the EWA approximation of 3DGS (2D covariance ``J W Sigma W^T J^T``), evaluates the SH colour for the
view direction and "soft splats" every gaussian into a fixed ``(2r+1)^2`` pixel footprint with
``index_add_`` (order-independent: ``image = sum(w * c) / (sum(w) + 1)``, a stand-in for the tiled
alpha compositing of the CUDA rasterizer). The image is compared to a target with an L1 loss; the
targets are rendered once, at start-up, from a hidden "ground-truth" gaussian torus made from the
seed, so nothing is downloaded. Adam with per-attribute learning rates, as in 3DGS.

Memory flags:

``--sh-degree 0..3``
    SH coefficients per gaussian: 3, 12, 27 or 48 floats.
``--optimize-memory``
    store the SH parameter in fp16 (``model.sh.dtype == torch.float16``); it is cast to fp32 for
    the colour computation. Its gradient and Adam moments are fp16 too, so the SH share of memory
    halves. fp16 cannot hold Adam's usual eps (1e-15), so that parameter group uses eps=1e-4.
``--fragmentation aggressive|normal|minimal``
    how the CUDA caching allocator is treated:

    * ``aggressive``: ``torch.cuda.empty_cache()`` is never called, and every step allocates a few
      scratch buffers of random sizes (0.25x-2x the SH tensor), frees every other one before the
      forward pass and holds the rest until after the optimizer step, so the cached segments are
      split into odd-sized free blocks (reserved - allocated grows).
    * ``normal`` (default): ``torch.cuda.empty_cache()`` every 100 steps, as many 3DGS trainers do.
    * ``minimal``: ``torch.cuda.empty_cache()`` after every step: unused cached blocks are returned
      to the driver each step (lowest reserved memory, slower allocations).

    On a CPU there is no caching allocator: empty_cache is not called (the schedule is still counted
    in the summary) and only ``aggressive``'s scratch buffers happen.
``--densify-every K``
    every K steps clone the ``--densify-fraction`` of gaussians with the largest accumulated
    position gradient (3DGS "densification"): every parameter and its Adam state grow, so memory
    rises in steps during training. 0 (default) = off.

CPU:  python sample_runs/gaussian_splat.py   (10,000 gaussians, 64x64 views)
GPU:  python sample_runs/gaussian_splat.py --num-gaussians 2000000 --resolution 1024 --steps 300
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # samplekit.py lives beside this script
from samplekit import Parser as _Parser  # noqa: E402
from samplekit import fraction as _fraction
from samplekit import non_negative_int as _non_negative_int
from samplekit import positive_int as _positive_int
from samplekit import resolve_device
from samplekit import sync as _sync

# ----------------------------------------------------------------------------- command line



def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="gaussian_splat.py",
        description="Gaussian-splatting-style scene fitting on synthetic views (SH coefficients dominate memory).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=_positive_int, default=50, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0, help="random seed (scene, init, camera order)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available")
    p.add_argument("--log-every", type=_positive_int, default=10, help="print a progress line every N steps")
    p.add_argument("--num-gaussians", type=_positive_int, default=10000, help="initial number of gaussians")
    p.add_argument("--sh-degree", type=int, choices=(0, 1, 2, 3), default=3, help="spherical-harmonics degree")
    p.add_argument("--resolution", type=_positive_int, default=64, help="rendered image width and height")
    p.add_argument("--views", type=_positive_int, default=8, help="number of training cameras")
    p.add_argument("--footprint", type=_non_negative_int, default=1,
                   help="splat footprint radius r in pixels: each gaussian touches (2r+1)^2 pixels")
    p.add_argument("--optimize-memory", action="store_true", help="store SH coefficients in fp16")
    p.add_argument("--fragmentation", choices=("aggressive", "normal", "minimal"), default="normal",
                   help="empty_cache policy: aggressive = never + varying scratch buffers, normal = every "
                        "100 steps, minimal = every step")
    p.add_argument("--densify-every", type=_non_negative_int, default=0,
                   help="clone high-gradient gaussians every N steps (0 = off)")
    p.add_argument("--densify-fraction", type=_fraction, default=0.1,
                   help="fraction of gaussians cloned per densification")
    return p



# ----------------------------------------------------------------------------- scene and cameras

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)

ALPHA_CUTOFF_POWER = math.log(1.0 / 255.0)
CAMERA_DISTANCE = 3.5
FOCAL_FACTOR = 1.1  # focal length in pixels = FOCAL_FACTOR * resolution


@dataclass
class Camera:
    world_to_cam: torch.Tensor  # (3, 3) rows: right, down, forward
    position: torch.Tensor  # (3,)
    focal: float
    size: int


def make_cameras(views: int, resolution: int, device: torch.device) -> list[Camera]:
    """Cameras on an orbit around the origin, alternating above and below the equator."""
    cams = []
    for k in range(views):
        az = 2 * math.pi * k / views
        el = math.radians(20.0 if k % 2 == 0 else -20.0)
        pos = torch.tensor([math.cos(el) * math.cos(az), math.sin(el), math.cos(el) * math.sin(az)]) * CAMERA_DISTANCE
        forward = -pos / pos.norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0]))
        right = right / right.norm()
        up = torch.linalg.cross(right, forward)
        rot = torch.stack([right, -up, forward])
        cams.append(Camera(rot.to(device), pos.to(device), FOCAL_FACTOR * resolution, resolution))
    return cams


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Real spherical-harmonics basis up to degree 3 (the 3DGS convention): (N, 3) unit dirs -> (N, (d+1)^2)."""
    x, y, z = dirs.unbind(-1)
    terms = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        terms += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        terms += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2.0 * zz - xx - yy), SH_C2[3] * x * z,
                  SH_C2[4] * (xx - yy)]
    if degree >= 3:
        terms += [SH_C3[0] * y * (3.0 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4.0 * zz - xx - yy),
                  SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), SH_C3[4] * x * (4.0 * zz - xx - yy),
                  SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3.0 * yy)]
    return torch.stack(terms, dim=-1)


def eval_sh(degree: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour (N, 3) from SH coefficients sh (N, (d+1)^2, 3) for unit view directions dirs (N, 3)."""
    return torch.bmm(sh_basis(degree, dirs).unsqueeze(1), sh).squeeze(1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    q = F.normalize(q, dim=-1)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).view(-1, 3, 3)


class GaussianModel(nn.Module):
    """N gaussians; forward(camera) renders an image (3, H, W)."""

    PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "sh")

    def __init__(self, num: int, sh_degree: int, resolution: int, footprint: int, sh_dtype: torch.dtype,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.sh_degree = sh_degree
        self.footprint = footprint
        coeffs = (sh_degree + 1) ** 2
        pixel = CAMERA_DISTANCE / (FOCAL_FACTOR * resolution)  # world size of one pixel at the scene centre
        self.means = nn.Parameter(torch.rand(num, 3, generator=generator) * 2.0 - 1.0)
        self.log_scales = nn.Parameter(torch.full((num, 3), math.log(pixel)))
        quats = torch.zeros(num, 4)
        quats[:, 0] = 1.0
        self.quats = nn.Parameter(quats + 0.05 * torch.randn(num, 4, generator=generator))
        self.opacity_logits = nn.Parameter(torch.full((num, 1), math.log(0.1 / 0.9)))
        sh = torch.zeros(num, coeffs, 3)
        sh[:, 0] = 0.5 * torch.randn(num, 3, generator=generator)
        self.sh = nn.Parameter(sh.to(sh_dtype))
        offsets = torch.arange(-footprint, footprint + 1)
        oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
        self.offsets: torch.Tensor
        self.register_buffer("offsets", torch.stack([ox.flatten(), oy.flatten()], dim=-1), persistent=False)

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    def forward(self, cam: Camera) -> tuple[torch.Tensor, int]:
        size, f = cam.size, cam.focal
        # Cull: gaussians behind the camera or outside the image (a data-dependent count each view).
        with torch.no_grad():
            p = (self.means - cam.position) @ cam.world_to_cam.T
            z = p[:, 2]
            margin = 0.55 * size + 2 * self.footprint
            vis = (z > 0.2) & ((f * p[:, 0] / z).abs() < margin) & ((f * p[:, 1] / z).abs() < margin)
            idx = vis.nonzero().squeeze(1)

        def visible(param: torch.Tensor) -> torch.Tensor:  # gather only when something was culled
            return param if idx.numel() == param.shape[0] else param[idx]

        means = visible(self.means)
        p = (means - cam.position) @ cam.world_to_cam.T
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        u = f * x / z + size / 2
        v = f * y / z + size / 2
        # 3D covariance R S S^T R^T, then the EWA projection J W Sigma W^T J^T (+0.3 px low-pass, as 3DGS).
        # With M = R S: cov2 = T T^T where T = J W M (N, 2, 3).
        m = quaternion_to_matrix(visible(self.quats)) * torch.exp(visible(self.log_scales))[:, None, :]
        zero = torch.zeros_like(z)
        jac = torch.stack([f / z, zero, -f * x / (z * z), zero, f / z, -f * y / (z * z)], dim=-1).view(-1, 2, 3)
        t = (jac @ cam.world_to_cam) @ m
        cov2 = t @ t.transpose(1, 2)
        a, b, c = cov2[:, 0, 0] + 0.3, cov2[:, 0, 1], cov2[:, 1, 1] + 0.3
        det = (a * c - b * b).clamp_min(1e-8)
        ca, cb, cc = c / det, -b / det, a / det  # the conic (inverse 2D covariance)
        # Colour from the SH coefficients for this view direction (fp16 storage -> fp32 compute).
        dirs = F.normalize(means - cam.position, dim=-1)
        colors = (eval_sh(self.sh_degree, visible(self.sh).float(), dirs) + 0.5).clamp_min(0.0)
        opacity = torch.sigmoid(visible(self.opacity_logits))
        # Soft splatting into a (2r+1)^2 pixel footprint around each projected centre.
        with torch.no_grad():
            px = u.detach().floor().long()[:, None] + self.offsets[:, 0]
            py = v.detach().floor().long()[:, None] + self.offsets[:, 1]
            inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
            pixel_index = torch.where(inside, py * size + px, 0).flatten()
        dx = px + 0.5 - u[:, None]
        dy = py + 0.5 - v[:, None]
        power = (-0.5 * (ca[:, None] * dx * dx + cc[:, None] * dy * dy) - cb[:, None] * dx * dy).clamp_max(0.0)
        # Like the 3DGS rasterizer, skip contributions under 1/255.
        keep = inside & (power.detach() > ALPHA_CUTOFF_POWER)
        weight = opacity * torch.exp(power.clamp_min(ALPHA_CUTOFF_POWER)) * keep
        contrib = torch.cat([colors.T[:, :, None] * weight, weight[None]]).flatten(1)  # (4, M*K): w*rgb, w
        accum = torch.zeros(4, size * size, device=means.device, dtype=contrib.dtype)
        accum = accum.index_add(1, pixel_index, contrib)
        image = accum[:3] / (accum[3:] + 1.0)
        return image.view(3, size, size), int(idx.numel())


def make_targets(args: argparse.Namespace, cams: list[Camera], device: torch.device) -> list[torch.Tensor]:
    """Render the training views of a hidden ground-truth scene: a coloured gaussian torus."""
    g = torch.Generator().manual_seed(args.seed + 1000)
    n = max(2000, min(args.num_gaussians, 200_000))
    gt = GaussianModel(n, 0, args.resolution, args.footprint, torch.float32, g)
    theta = torch.rand(n, generator=g) * 2 * math.pi
    phi = torch.rand(n, generator=g) * 2 * math.pi
    ring = 0.8 + 0.3 * torch.cos(phi)
    with torch.no_grad():
        gt.means.copy_(torch.stack([ring * torch.cos(theta), 0.3 * torch.sin(phi), ring * torch.sin(theta)], dim=-1))
        gt.log_scales.add_(math.log(1.5))
        gt.opacity_logits.fill_(math.log(0.9 / 0.1))
        rgb = torch.stack([0.5 + 0.5 * torch.cos(theta), 0.5 + 0.5 * torch.sin(phi), 0.5 + 0.5 * torch.sin(theta)], -1)
        gt.sh[:, 0] = (rgb - 0.5) / SH_C0
        gt.to(device)
        return [gt(cam)[0] for cam in cams]


# ----------------------------------------------------------------------------- training helpers


def make_optimizer(model: GaussianModel) -> torch.optim.Adam:
    """Adam with the per-attribute learning rates of 3DGS (position lr raised for a short demo)."""
    sh_eps = 1e-4 if model.sh.dtype == torch.float16 else 1e-15
    return torch.optim.Adam([
        {"params": [model.means], "lr": 1e-3, "name": "means"},
        {"params": [model.log_scales], "lr": 5e-3, "name": "log_scales"},
        {"params": [model.quats], "lr": 1e-3, "name": "quats"},
        {"params": [model.opacity_logits], "lr": 5e-2, "name": "opacity_logits"},
        {"params": [model.sh], "lr": 2.5e-3, "name": "sh", "eps": sh_eps},
    ], lr=1e-3, eps=1e-15)


def densify(model: GaussianModel, optimizer: torch.optim.Adam, grad_accum: torch.Tensor, fraction: float,
            generator: torch.Generator) -> torch.Tensor:
    """Clone the gaussians with the largest accumulated position gradient; grow the Adam state to match."""
    n = model.num_gaussians
    k = max(1, int(n * fraction))
    chosen = torch.topk(grad_accum, k).indices
    for group in optimizer.param_groups:
        old = group["params"][0]
        with torch.no_grad():
            extra = old[chosen].clone()
            if group["name"] == "means":
                scale = torch.exp(model.log_scales[chosen]).float()
                noise = torch.randn(extra.shape, generator=generator).to(extra.device)
                extra = extra + noise * scale
            new = nn.Parameter(torch.cat([old, extra]))
        state = optimizer.state.pop(old, {})
        for key, value in list(state.items()):
            if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == n:
                state[key] = torch.cat([value, torch.zeros_like(value[:k])])
        group["params"][0] = new
        if state:
            optimizer.state[new] = state
        setattr(model, group["name"], new)
    return torch.cat([grad_accum, torch.zeros(k, device=grad_accum.device)])


def allocate_scratch(model: GaussianModel, rng: random.Random) -> list[torch.Tensor]:
    """--fragmentation aggressive: varying-size buffers; every other one freed at once, the rest kept."""
    base = model.sh.numel()
    buffers = [torch.empty(int(base * rng.uniform(0.25, 2.0)), device=model.sh.device) for _ in range(6)]
    return buffers[::2]  # the odd ones are freed here, leaving holes between the kept ones


def _mean_step_ms(t_start: float, t_first: float | None, t_end: float, steps: int) -> float:
    """Mean step time in ms, leaving out the first (warm-up) step when there are more."""
    if steps > 1 and t_first is not None:
        return 1000 * (t_end - t_first) / (steps - 1)
    return 1000 * (t_end - t_start) / steps



# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    torch.manual_seed(args.seed)
    init_gen = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed)  # camera order
    scratch_rng = random.Random(args.seed + 1)  # --fragmentation aggressive buffer sizes

    sh_dtype = torch.float16 if args.optimize_memory else torch.float32
    cams = make_cameras(args.views, args.resolution, device)
    targets = make_targets(args, cams, device)
    model = GaussianModel(args.num_gaussians, args.sh_degree, args.resolution, args.footprint, sh_dtype,
                          init_gen).to(device)
    optimizer = make_optimizer(model)
    grad_accum = torch.zeros(model.num_gaussians, device=device)
    sh_mib = model.sh.numel() * model.sh.element_size() / 2**20
    print(f"gaussian_splat: {model.num_gaussians} gaussians, SH degree {args.sh_degree} ({model.sh.dtype}, "
          f"{sh_mib:.1f} MiB), {args.resolution}x{args.resolution}, device {device}, "
          f"fragmentation {args.fragmentation}", flush=True)

    cache_releases = 0
    scratch_bytes = 0
    densifications = 0
    losses: list[float] = []
    order = list(range(args.views))
    t_start = t_log = time.perf_counter()
    t_first = None
    for step in range(1, args.steps + 1):
        if step % args.views == 1 or args.views == 1:
            rng.shuffle(order)
        view = order[(step - 1) % args.views]
        scratch: list[torch.Tensor] = []
        if args.fragmentation == "aggressive":
            scratch = allocate_scratch(model, scratch_rng)
            scratch_bytes += sum(t.numel() * t.element_size() for t in scratch)

        image, visible = model(cams[view])
        loss = F.l1_loss(image, targets[view])
        loss.backward()
        with torch.no_grad():
            assert model.means.grad is not None
            grad_accum += model.means.grad.norm(dim=-1)  # for densification, as 3DGS accumulates view-space grads
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del scratch

        if args.densify_every and step % args.densify_every == 0 and step < args.steps:
            grad_accum = densify(model, optimizer, grad_accum, args.densify_fraction, init_gen)
            grad_accum.zero_()
            densifications += 1
        if args.fragmentation == "minimal" or (args.fragmentation == "normal" and step % 100 == 0):
            cache_releases += 1
            if device.type == "cuda":
                torch.cuda.empty_cache()

        if step % args.log_every == 0 or step == args.steps:
            value = loss.item()
            losses.append(value)
            _sync(device)
            now = time.perf_counter()
            ms = (now - t_log) * 1000 / (args.log_every if step % args.log_every == 0 else step % args.log_every)
            t_log = now
            print(f"step {step}/{args.steps} loss {value:.6f} | {ms:.1f} ms/step | gaussians {model.num_gaussians} "
                  f"visible {visible}", flush=True)
        if step == 1:
            _sync(device)
            t_first = time.perf_counter()

    _sync(device)
    mean_ms = _mean_step_ms(t_start, t_first, time.perf_counter(), args.steps)
    print(f"done: {args.steps} steps, final loss {losses[-1]:.6f}, {mean_ms:.1f} ms/step (after the first)",
          flush=True)
    return {
        "steps": args.steps,
        "losses": losses,
        "final_loss": losses[-1],
        "mean_step_ms": mean_ms,
        "num_gaussians": model.num_gaussians,
        "sh_dtype": str(model.sh.dtype),
        "sh_shape": tuple(model.sh.shape),
        "sh_bytes": model.sh.numel() * model.sh.element_size(),
        "optimizer_state_rows": sorted({int(s["exp_avg"].shape[0]) for s in optimizer.state.values()}),
        "cache_releases": cache_releases,
        "scratch_bytes": scratch_bytes,
        "densifications": densifications,
        "device": str(device),
    }


if __name__ == "__main__":
    main()
