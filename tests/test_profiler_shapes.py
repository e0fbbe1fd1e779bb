"""The hook on common training shapes, each against ground truth computed here.

Truth is never memtop's accounting: parameters, gradients and optimizer state are the unique
storages (by ``untyped_storage().data_ptr()``) of the tensors the test itself holds, taken at the
two moments the hook reports (just before ``backward()``: the end of the forward pass; just after
``optimizer.step()``); activations are what autograd's own saved-tensors hook sees during the
forward pass, minus parameter storages. The hook runs as under ``memtop train`` (zero-code: it is
told about no model and no optimizer), in this process, with activations walked every step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import only_run, read_records, run_memtop
from torch import nn
from torch.utils.checkpoint import checkpoint

pytestmark = [pytest.mark.usefixtures("fresh_hooks")]


# ---------------------------------------------------------------------------- ground truth
def storages(tensors: list[torch.Tensor | None]) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in tensors:
        if t is not None:
            st = t.untyped_storage()
            out[st.data_ptr()] = st.nbytes()
    return out


@dataclass
class Static:
    parameters: int
    gradients: int
    optimizer_state: int


def static_truth(models: Sequence[nn.Module], opts: Sequence[torch.optim.Optimizer], extra: Sequence[torch.Tensor] = ()) -> Static:
    tensors: list[torch.Tensor | None] = [*extra]
    for m in models:
        tensors += list(m.parameters()) + list(m.buffers())
    for o in opts:
        tensors += [p for g in o.param_groups for p in g["params"]]
    params = storages(tensors)
    grads = storages([t.grad for t in tensors if t is not None])
    state_tensors: list[torch.Tensor | None] = [v for o in opts for s in o.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    state = {k: v for k, v in storages(state_tensors).items() if k not in params}
    return Static(sum(params.values()), sum(grads.values()), sum(state.values()))


@contextmanager
def saved_tensors(exclude: set[int], resident: set[int] = frozenset()) -> Iterator[dict[Any, int]]:  # type: ignore[assignment]
    """Collect what autograd saves: unique storages, minus ``exclude``; a view of a ``resident``
    storage (a dataset held whole) weighs its own elements, as that is all the graph adds."""
    seen: dict[Any, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr in resident:
            seen[(ptr, t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        elif ptr not in exclude:
            seen[ptr] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def param_ptrs(*models: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for m in models for t in [*m.parameters(), *m.buffers()]}


@contextmanager
def zero_code(runs_dir: Path) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The hook as `memtop train` arms it: installed, told nothing about the script."""
    from memtop.profiler import hooks
    from memtop.profiler.api import standalone_session
    from memtop.profiler.config import HookConfig

    config = HookConfig.from_env()
    session = standalone_session(config, runs_dir, "shape")
    hooks.set_session(session)
    hooks.install(config, lambda: session)
    try:
        yield lambda: read_records(session.run_dir)  # complete once the block has closed the session
    finally:
        session.close()
        hooks.uninstall()
        hooks.set_session(None)


def step_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "step"]


def assert_static(moment: dict[str, Any], truth: Static, where: str) -> None:
    got = (moment["parameters"], moment["gradients"], moment["optimizer_state"])
    assert got == (truth.parameters, truth.gradients, truth.optimizer_state), (where, got, truth)


def assert_close(value: int, truth: int, where: str) -> None:
    assert truth > 0, where
    assert abs(value - truth) <= 0.05 * truth, (where, value, truth)


class Mlp(nn.Module):
    def __init__(self, d_in: int = 64, hidden: int = 256, d_out: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(torch.relu(self.norm(self.fc1(x))))
        return out


@dataclass
class Expected:
    forward_end: Static
    step_end: Static
    activations: int


def train_step(
    model: nn.Module, opt: torch.optim.Optimizer, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, resident: set[int] = frozenset()  # type: ignore[assignment]
) -> Expected:
    """One step of the usual shape (``forward(x).pow(2).mean()``, backward, optimizer step,
    ``zero_grad(set_to_none=True)``) and its truth: the static figures at both moments, and what
    autograd saved in the forward pass."""
    fwd = static_truth([model], [opt])
    with saved_tensors(param_ptrs(model), resident) as seen:
        loss = forward(x).pow(2).mean()
    loss.backward()
    opt.step()
    expected = Expected(fwd, static_truth([model], [opt]), sum(seen.values()))
    opt.zero_grad(set_to_none=True)
    return expected


def check(steps: list[dict[str, Any]], expected: list[Expected], point: str = "optimizer_step") -> None:
    assert len(steps) == len(expected), (len(steps), len(expected))
    for i, (rec, exp) in enumerate(zip(steps, expected, strict=True)):
        fwd = rec["moments"]["forward_end"]
        assert_static(fwd, exp.forward_end, f"step {i + 1} forward_end")
        assert_static(rec["moments"][point], exp.step_end, f"step {i + 1} {point}")
        assert_close(fwd["activations"], exp.activations, f"step {i + 1} activations")
        hw = rec["highwater"]
        for cat in ("parameters", "gradients", "optimizer_state", "activations"):
            assert hw[cat] == max(m[cat] for m in rec["moments"].values()), (i, cat)


# ---------------------------------------------------------------------------- 1. reentrant checkpointing
def test_reentrant_checkpointing_takes_the_outermost_backward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    embed = nn.Linear(64, 128)
    blocks = nn.ModuleList(nn.Sequential(nn.Linear(128, 512), nn.GELU(), nn.Linear(512, 128)) for _ in range(4))
    model = nn.ModuleDict({"embed": embed, "blocks": blocks})
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(256, 64)
    expected = []
    with zero_code(tmp_path) as records:
        for _ in range(3):
            fwd = static_truth([model], [opt])
            with saved_tensors(param_ptrs(model)) as seen:
                h = embed(x)
                for b in blocks:
                    h = checkpoint(b, h, use_reentrant=True)
                loss = h.pow(2).mean()
            loss.backward()
            opt.step()
            expected.append(Expected(fwd, static_truth([model], [opt]), sum(seen.values())))
            opt.zero_grad(set_to_none=True)
            del h, loss
    check(step_records(records()), expected)


# ---------------------------------------------------------------------------- 2. models no optimizer owns
def test_fp32_master_weights_count_the_half_precision_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Mlp(64, 512, 64).to(torch.bfloat16)
    master = [p.detach().float().clone().requires_grad_(True) for p in model.parameters()]
    opt = torch.optim.Adam(master, lr=1e-3)
    x = torch.randn(32, 64, dtype=torch.bfloat16)
    expected = []
    with zero_code(tmp_path) as records:
        for _ in range(3):
            fwd = static_truth([model], [opt])
            with saved_tensors(param_ptrs(model)) as seen:
                loss = model(x).float().pow(2).mean()
            loss.backward()
            for m, p in zip(master, model.parameters(), strict=True):
                m.grad = p.grad.float()  # type: ignore[union-attr]
            opt.step()
            expected.append(Expected(fwd, static_truth([model], [opt]), sum(seen.values())))
            with torch.no_grad():
                for m, p in zip(master, model.parameters(), strict=True):
                    p.copy_(m)
            model.zero_grad(set_to_none=True)
            opt.zero_grad(set_to_none=True)
            del loss
    steps = step_records(records())
    check(steps, expected)
    names = {t["name"] for r in steps for t in r["large_tensors"]}
    assert not any(n.startswith("saved[") and "weight" in n for n in names)


def _distill(tmp_path: Path, with_ema: bool) -> None:
    torch.manual_seed(0)
    student = Mlp(64, 128, 32)
    teacher = Mlp(64, 1024, 32).eval().requires_grad_(False)  # a local of this function, in no global
    ema = copy.deepcopy(student).requires_grad_(False) if with_ema else None
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    x = torch.randn(64, 64)
    models = [student, teacher] + ([ema] if ema is not None else [])
    expected = []
    with zero_code(tmp_path) as records:
        for _ in range(3):
            fwd = static_truth(models, [opt])
            with saved_tensors(param_ptrs(*models)) as seen:
                with torch.no_grad():
                    target = teacher(x).softmax(-1)
                loss = nn.functional.cross_entropy(student(x), target)
            loss.backward()
            opt.step()
            expected.append(Expected(fwd, static_truth(models, [opt]), sum(seen.values())))
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema.parameters(), student.parameters(), strict=True):
                        e.lerp_(p, 0.01)
            opt.zero_grad(set_to_none=True)
            del loss
    steps = step_records(records())
    check(steps, expected)
    names = {t["name"] for r in steps for t in r["large_tensors"]}
    # the teacher is named after its class (no global holds it); 64 KiB threshold: only its weights
    assert names == {"Mlp.fc1.weight", "Mlp.fc2.weight"} or not names


def test_frozen_teacher_counts_as_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMTOP_LARGE_TENSOR_BYTES", str(64 * 1024))
    _distill(tmp_path, with_ema=False)


def test_ema_copy_counts_as_parameters(tmp_path: Path) -> None:
    _distill(tmp_path, with_ema=True)


def test_optimizer_built_after_the_first_forward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Mlp()
    x = torch.randn(32, 64)
    expected = []
    with zero_code(tmp_path) as records:
        model(x).sum().backward()  # a shape check before the optimizer exists
        model.zero_grad(set_to_none=True)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(3):
            expected.append(train_step(model, opt, model, x))
    recs = records()
    check(step_records(recs), expected)
    assert not [r for r in recs if r["type"] == "warning"]


# ---------------------------------------------------------------------------- 3. two live graphs
def test_gan_counts_the_generator_graph_held_while_the_discriminator_backprops(tmp_path: Path) -> None:
    """DCGAN's loop: ``fake`` keeps the generator's graph alive through the discriminator's backward."""
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(16, 512), nn.ReLU(), nn.Linear(512, 1024), nn.Tanh())
    disc = nn.Sequential(nn.Linear(1024, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4)
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4)
    bce = nn.BCEWithLogitsLoss()
    real = torch.randn(256, 1024)
    ones, zeros = torch.ones(256, 1), torch.zeros(256, 1)
    exclude = param_ptrs(gen, disc)
    expected: list[tuple[Static, int, int]] = []  # per iteration: forward-end truth, activations, high-water
    with zero_code(tmp_path) as records:
        for _ in range(5):
            candidates = []
            with saved_tensors(exclude) as seen_gen:
                fake = gen(torch.randn(256, 16))
            with saved_tensors(exclude) as seen_d:
                loss_d = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
            candidates.append((static_truth([gen, disc], [opt_d, opt_g]), sum({**seen_gen, **seen_d}.values())))
            loss_d.backward()
            opt_d.step()
            gen.zero_grad(set_to_none=True)
            with saved_tensors(exclude) as seen_g:
                loss_g = bce(disc(fake), ones)
            candidates.append((static_truth([gen, disc], [opt_d, opt_g]), sum({**seen_gen, **seen_g}.values())))
            loss_g.backward()
            opt_g.step()
            disc.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)

            def tracked(c: tuple[Static, int]) -> int:
                return c[0].parameters + c[0].gradients + c[0].optimizer_state + c[1]

            best = max(candidates, key=tracked)
            expected.append((best[0], best[1], max(a for _, a in candidates)))
            del fake, loss_d, loss_g
    steps = step_records(records())
    # the discriminator steps first, so the first steps end at its step until the hook sees that
    # the generator's step closes each iteration; from the fourth on, one record per iteration
    assert len(steps) == 5
    for rec, (fwd, acts, high) in list(zip(steps, expected, strict=True))[3:]:
        assert_static(rec["moments"]["forward_end"], fwd, f"step {rec['step']}")
        assert_close(rec["moments"]["forward_end"]["activations"], acts, f"step {rec['step']} activations")
        assert_close(rec["highwater"]["activations"], high, f"step {rec['step']} high-water")


# ---------------------------------------------------------------------------- 4. parameters replaced
class Splats(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(n, 3))
        self.colors = nn.Parameter(torch.randn(n, 48))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(-torch.cdist(q, self.means), dim=-1)
        return w @ torch.tanh(self.colors)


def densify(model: Splats, opt: torch.optim.Adam, k: int) -> None:
    """As 3D Gaussian splatting does: new, larger parameters and Adam state in place of the old."""
    for group in opt.param_groups:
        old = group["params"][0]
        with torch.no_grad():
            new = nn.Parameter(torch.cat([old, old[:k].clone()]))
        state = opt.state.pop(old, {})
        for key, value in list(state.items()):
            if value.dim() > 0:
                state[key] = torch.cat([value, torch.zeros_like(value[:k])])
        group["params"][0] = new
        opt.state[new] = state
        setattr(model, group["name"], new)


def test_parameters_replaced_mid_training(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Splats(2000)
    opt = torch.optim.Adam([{"params": [model.means], "name": "means"}, {"params": [model.colors], "name": "colors"}], lr=1e-2)
    q = torch.randn(128, 3)
    expected = []
    with zero_code(tmp_path) as records:
        for step in range(1, 6):
            expected.append(train_step(model, opt, model, q))
            if step in (2, 3):
                densify(model, opt, 1000)
    check(step_records(records()), expected)


# ---------------------------------------------------------------------------- 5. a view of a resident tensor
def test_saved_view_of_a_resident_dataset_counts_the_view(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = torch.randn(40_000, 64)  # the whole dataset in one tensor, 10 MiB; batches are slices
    model = Mlp(64, 256, 64)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    resident = {data.untyped_storage().data_ptr()}
    expected = []
    with zero_code(tmp_path) as records:
        for i in range(3):
            expected.append(train_step(model, opt, model, data[i * 128 : (i + 1) * 128], resident))
    steps = step_records(records())
    check(steps, expected)
    assert all(r["moments"]["forward_end"]["activations"] < 1 << 20 for r in steps)


def test_saved_view_of_a_temporary_counts_its_whole_storage(tmp_path: Path) -> None:
    """A slice of a tensor nothing else holds keeps all of it alive through the graph."""
    torch.manual_seed(0)
    model = Mlp(64, 256, 64)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    expected = []
    with zero_code(tmp_path) as records:
        for _ in range(3):
            expected.append(train_step(model, opt, model, torch.randn(1024, 64)[:128]))
    steps = step_records(records())
    check(steps, expected)
    assert all(r["moments"]["forward_end"]["activations"] >= 1024 * 64 * 4 for r in steps)


# ---------------------------------------------------------------------------- 6. no torch optimizer
def test_manual_sgd_without_an_optimizer_gets_steps_and_a_warning(tmp_path: Path) -> None:
    """pytorch/examples word_language_model's shape: weights updated by hand after backward."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(100, 32), "rnn": nn.LSTM(32, 64), "dec": nn.Linear(64, 100)})
    tokens = torch.randint(0, 100, (21, 8))
    lr = 0.5
    expected_static = []
    expected_acts = []
    with zero_code(tmp_path) as records:
        for _ in range(4):
            model.zero_grad()
            fwd = static_truth([model], [])
            with saved_tensors(param_ptrs(model)) as seen:
                h, _ = model["rnn"](model["emb"](tokens[:-1]))
                loss = nn.functional.cross_entropy(model["dec"](h).flatten(0, 1), tokens[1:].flatten())
            loss.backward()
            expected_static.append((fwd, static_truth([model], [])))
            expected_acts.append(sum(seen.values()))
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)  # type: ignore[arg-type]
            del loss, h
    recs = records()
    steps = step_records(recs)
    # one step per backward pass once two passes went by without an optimizer step
    assert [r["step"] for r in steps] == [1, 2, 3]
    check(steps, [Expected(f, e, a) for (f, e), a in zip(expected_static[1:], expected_acts[1:], strict=True)], point="backward_end")
    warnings = [r["message"] for r in recs if r["type"] == "warning"]
    assert len(warnings) == 1 and "no optimizer step" in warnings[0]


# ---------------------------------------------------------------------------- 7. the moment shown
def test_highwater_shows_gradients_that_the_peak_moment_does_not(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Mlp(64, 512, 64)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(1024, 64)  # activations dominate: the peak is the end of the forward pass
    with zero_code(tmp_path) as records:
        for _ in range(3):
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    grads = sum(p.numel() * p.element_size() for p in model.parameters())
    for rec in step_records(records()):
        assert rec["peak_point"] == "forward_end"
        assert rec["categories"]["gradients"] == 0  # set_to_none: none at the forward-end peak
        assert rec["highwater"]["gradients"] == grads
        assert rec["highwater"]["activations"] == rec["categories"]["activations"] > 0



@pytest.mark.slow
@pytest.mark.short
def test_memtop_train_and_analyze_on_a_script_without_an_optimizer(tmp_path: Path) -> None:
    """Under `memtop train` the script gets step records, and `analyze` explains the run."""
    script = Path(__file__).resolve().parent / "scripts" / "manual_sgd.py"
    runs = tmp_path / "runs"
    out = run_memtop("train", "--no-tui", "--runs-dir", str(runs), str(script), "--steps", "6")
    assert out.returncode == 0, out.stderr
    recs = read_records(only_run(runs))
    steps = step_records(recs)
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    # three modules, no optimizer and no module owning the others: all three are the model
    params = sum(p.numel() * p.element_size() for m in (nn.Embedding(200, 32), nn.LSTM(32, 64), nn.Linear(64, 200)) for p in m.parameters())
    assert all(r["moments"]["backward_end"]["parameters"] == params == r["moments"]["backward_end"]["gradients"] for r in steps)
    assert any(r["type"] == "warning" and "no optimizer step" in r["message"] for r in recs)
    report = run_memtop("analyze", "--runs-dir", str(runs), "latest")
    assert report.returncode == 0, report.stderr


# ---------------------------------------------------------------------------- CUDA identities
def _cuda_shapes(kind: str) -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    if kind == "reentrant":
        model: nn.Module = nn.Sequential(nn.Linear(64, 256), *[nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)) for _ in range(4)]).to(dev)
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters())
        x = torch.randn(512, 64, device=dev)
        for _ in range(4):
            assert isinstance(model, nn.Sequential)
            h = model[0](x)
            for block in list(model)[1:]:
                h = checkpoint(block, h, use_reentrant=True)
            h.pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    elif kind == "master_weights":
        model = Mlp(256, 2048, 256).to(dev, torch.bfloat16)
        master = [p.detach().float().clone().requires_grad_(True) for p in model.parameters()]
        opt = torch.optim.Adam(master)
        x = torch.randn(256, 256, device=dev, dtype=torch.bfloat16)
        for _ in range(4):
            model(x).float().pow(2).mean().backward()
            for m, p in zip(master, model.parameters(), strict=True):
                m.grad = p.grad.float()  # type: ignore[union-attr]
            opt.step()
            with torch.no_grad():
                for m, p in zip(master, model.parameters(), strict=True):
                    p.copy_(m)
            model.zero_grad(set_to_none=True)
            opt.zero_grad(set_to_none=True)
    else:  # gan
        gen = nn.Sequential(nn.Linear(16, 1024), nn.ReLU(), nn.Linear(1024, 4096), nn.Tanh()).to(dev)
        disc = nn.Sequential(nn.Linear(4096, 512), nn.LeakyReLU(0.2), nn.Linear(512, 1)).to(dev)
        opt_d, opt_g = torch.optim.Adam(disc.parameters()), torch.optim.Adam(gen.parameters())
        bce = nn.BCEWithLogitsLoss()
        real = torch.randn(256, 4096, device=dev)
        ones, zeros = torch.ones(256, 1, device=dev), torch.zeros(256, 1, device=dev)
        for _ in range(5):
            fake = gen(torch.randn(256, 16, device=dev))
            (bce(disc(real), ones) + bce(disc(fake.detach()), zeros)).backward()
            opt_d.step()
            gen.zero_grad(set_to_none=True)
            bce(disc(fake), ones).backward()
            opt_g.step()
            disc.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["reentrant", "master_weights", "gan"])
def test_cuda_identities_on_training_shapes(tmp_path: Path, kind: str) -> None:
    with zero_code(tmp_path) as records:
        _cuda_shapes(kind)
    recs = records()
    steps = step_records(recs)
    assert steps
    for rec in steps:
        assert rec["device"].startswith("cuda")
        assert sum(rec["categories"].values()) == rec["peak"], rec
        assert rec["allocated"] + rec["fragmentation_bytes"] == rec["reserved"]
    assert not [r for r in recs if r["type"] == "warning"]
