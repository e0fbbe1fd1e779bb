"""Training loops in the shapes users' code has, for memtop's third-party end-to-end tests.

Each shape is written the way that kind of code usually is (a GAN with two optimizers and two
graphs, distillation from a frozen teacher, an EMA copy, reentrant checkpointing, torch.compile, an
HF-Trainer-like loop, a Lightning-like module), tiny enough for a CPU. `--dump-truth FILE` writes
the independent ground truth for the test: the bytes of every model's unique parameter and buffer
storages (frozen teachers and EMA copies included, as memtop's contract counts them), the bytes
of every tensor in every optimizer's state, and the number of optimizer.step() calls.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

SHAPES = ("gan", "distill", "ema", "reentrant", "compile", "hf", "lightning", "manual", "inference")


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out))


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def model_bytes(models: Iterable[nn.Module]) -> int:
    ts: list[torch.Tensor] = []
    for m in models:
        ts.extend(m.parameters())
        ts.extend(m.buffers())
    return storage_bytes(ts)


def state_bytes(optimizers: Iterable[torch.optim.Optimizer]) -> int:
    return storage_bytes(
        v for opt in optimizers for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)
    )


def run_gan(steps: int, batch: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    netG = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32), nn.Tanh())
    netD = nn.Sequential(nn.Linear(32, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    crit = nn.BCEWithLogitsLoss()
    calls = 0
    for i in range(steps):
        real = torch.randn(batch, 32)
        netD.zero_grad()
        fake = netG(torch.randn(batch, 16))
        errD = crit(netD(real), torch.ones(batch, 1)) + crit(netD(fake.detach()), torch.zeros(batch, 1))
        errD.backward()
        optD.step()
        netG.zero_grad()
        errG = crit(netD(fake), torch.ones(batch, 1))
        errG.backward()
        optG.step()
        calls += 2
        print(f"iter {i} errD {errD.item():.4f} errG {errG.item():.4f}", flush=True)
    return [netG, netD], [optD, optG], calls


def run_distill(steps: int, batch: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    teacher = mlp(32, 256, 10).eval()
    teacher.requires_grad_(False)
    student = mlp(32, 32, 10)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    for i in range(steps):
        x = torch.randn(batch, 32)
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        loss = nn.functional.kl_div(s.log_softmax(-1), t.softmax(-1), reduction="batchmean")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(f"iter {i} loss {loss.item():.4f}", flush=True)
    return [teacher, student], [opt], steps


def run_ema(steps: int, batch: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    model = mlp(32, 128, 10)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i in range(steps):
        x, y = torch.randn(batch, 32), torch.randint(0, 10, (batch,))
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(0.99).add_(pm, alpha=0.01)
        print(f"iter {i} loss {loss.item():.4f}", flush=True)
    return [model, ema], [opt], steps


class CheckpointedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(mlp(64, 256, 64) for _ in range(3))
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = x + checkpoint(b, x, use_reentrant=True)
        out: torch.Tensor = self.head(x)
        return out


def run_reentrant(steps: int, batch: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    model = CheckpointedNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(steps):
        x = torch.randn(batch, 64, requires_grad=True)  # reentrant checkpoint needs an input that requires grad
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 10, (batch,)))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(f"iter {i} loss {loss.item():.4f}", flush=True)
    return [model], [opt], steps


def run_compile(steps: int, batch: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    model = mlp(32, 128, 10)
    compiled: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model, backend="aot_eager")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for i in range(steps):
        x, y = torch.randn(batch, 32), torch.randint(0, 10, (batch,))
        loss = nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(f"iter {i} loss {loss.item():.4f}", flush=True)
    return [model], [opt], steps


def run_hf(steps: int, batch: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    """The HF Trainer's inner loop: dict batches, a model returning an output with .loss, a scheduler,
    gradient accumulation and clipping, and zero_grad on the model."""

    class Out:
        def __init__(self, loss: torch.Tensor) -> None:
            self.loss = loss

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(200, 48)
            self.layer = nn.TransformerEncoderLayer(48, 4, 96, batch_first=True, dropout=0.0)
            self.lm_head = nn.Linear(48, 200, bias=False)
            self.lm_head.weight = self.embed.weight

        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> Out:
            logits = self.lm_head(self.layer(self.embed(input_ids)))
            return Out(nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()))

    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    accum = 2
    calls = 0
    for i in range(steps * accum):
        ids = torch.randint(0, 200, (batch, 16))
        out = model(input_ids=ids, labels=ids)
        (out.loss / accum).backward()
        if (i + 1) % accum == 0:
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            model.zero_grad()
            calls += 1
            print(f"step {calls} loss {out.loss.item():.4f}", flush=True)
    return [model], [opt], calls


def run_lightning(steps: int, batch: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    """A LightningModule's shape: training_step/configure_optimizers, the loop run by a 'trainer'
    that calls optimizer.step(closure) the way Lightning's automatic optimization does."""

    class LitModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(32, 64, 10)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    lit = LitModel()
    opt = lit.configure_optimizers()
    for i in range(steps):
        data = (torch.randn(batch, 32), torch.randint(0, 10, (batch,)))
        losses: list[float] = []

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = lit.training_step(data)  # noqa: B023 - runs inside this iteration
            loss.backward()
            losses.append(loss.item())  # noqa: B023
            return loss

        opt.step(closure)  # type: ignore[arg-type]  # torch types the closure as returning a float
        print(f"iter {i} loss {losses[-1]:.4f}", flush=True)
    return [lit], [opt], steps


class RNNLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Embedding(100, 32)
        self.rnn = nn.LSTM(32, 32, 2)
        self.decoder = nn.Linear(32, 100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder(self.rnn(self.encoder(x))[0])
        return out


def run_manual(steps: int, batch: int, explicit: bool = False) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    """pytorch/examples word_language_model's default: no torch optimizer, `p.data.add_(p.grad, alpha=-lr)`."""
    model = RNNLM()
    prof = None
    if explicit:
        import memtop

        prof = memtop.profile(model)
        prof.__enter__()
    for i in range(steps):
        data = torch.randint(0, 100, (10, batch))
        model.zero_grad()
        out = model(data)
        loss = nn.functional.cross_entropy(out.flatten(0, 1), data.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            if p.grad is not None:
                p.data.add_(p.grad, alpha=-20.0)
        if prof is not None:
            prof.step()
        print(f"iter {i} loss {loss.item():.4f}", flush=True)
    if prof is not None:
        prof.__exit__(None, None, None)
    return [model], [], steps


def run_inference(steps: int, batch: int) -> tuple[list[nn.Module], list[torch.optim.Optimizer], int]:
    """An evaluation script: forward passes under no_grad, no backward and no optimizer."""
    model = mlp(32, 64, 10).eval()
    with torch.no_grad():
        for i in range(steps):
            print(f"batch {i} mean {model(torch.randn(batch, 32)).mean().item():.4f}", flush=True)
    return [model], [], 0


RUNNERS = {
    "gan": run_gan, "distill": run_distill, "ema": run_ema, "reentrant": run_reentrant,
    "compile": run_compile, "hf": run_hf, "lightning": run_lightning, "manual": run_manual,
    "inference": run_inference,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=SHAPES, required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dump-truth", default=None)
    p.add_argument("--explicit", action="store_true", help="manual: mark steps with memtop.profile / prof.step()")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.shape == "manual":
        models, opts, calls = run_manual(args.steps, args.batch_size, args.explicit)
    else:
        models, opts, calls = RUNNERS[args.shape](args.steps, args.batch_size)
    if args.dump_truth:
        truth = {"parameters": model_bytes(models), "optimizer_state": state_bytes(opts), "optimizer_steps": calls}
        with open(args.dump_truth, "w") as f:
            json.dump(truth, f)
    print("done", flush=True)


if __name__ == "__main__":
    main()
