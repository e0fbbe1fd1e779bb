"""The sample training runs (sample_runs/*.py): they run, they train, and each memory flag does what it says.

Each script gets one real subprocess run (`python sample_runs/X.py --steps 3 ...`); the flag checks call
the script's `main(argv)` in-process (it returns a summary dict) to stay fast on a 2-core CPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RUNS = ROOT / "sample_runs"
SCRIPTS = ("gaussian_splat", "transformer_finetune", "video_pipeline", "image_fit")

# Tiny sizes for each script: a few steps in well under a second each on a CPU.
TINY: dict[str, list[str]] = {
    "gaussian_splat": ["--num-gaussians", "1500", "--resolution", "24", "--device", "cpu"],
    "transformer_finetune": ["--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--vocab-size", "64",
                             "--seq-len", "16", "--batch-size", "4", "--device", "cpu"],
    "video_pipeline": ["--max-frames", "3", "--resolution", "16", "--batch-size", "2", "--channels", "4",
                       "--device", "cpu"],
    "image_fit": ["--resolution", "16", "--hidden", "16", "--layers", "2", "--device", "cpu"],
}

LOSS_LINE = re.compile(r"^step (\d+)/(\d+) loss (\S+)", re.MULTILINE)

# One intra-op thread: at these sizes it is as fast as two, and it does not collapse when the CPU is shared.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(name: str, module_name: str | None = None) -> types.ModuleType:
    """Import sample_runs/<name>.py as a module (they are scripts, not a package)."""
    module_name = module_name or f"sample_run_{name}"
    spec = importlib.util.spec_from_file_location(module_name, SAMPLE_RUNS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


_cache: dict[str, types.ModuleType] = {}


def script(name: str) -> types.ModuleType:
    if name not in _cache:
        _cache[name] = load(name)
    return _cache[name]


def run(name: str, *flags: str, steps: int = 3) -> dict[str, Any]:
    """main() in-process with the tiny sizes (later flags win in argparse)."""
    with contextlib.redirect_stdout(sys.stderr):
        result: dict[str, Any] = script(name).main([*TINY[name], "--steps", str(steps), "--log-every", "1", *flags])
    return result


@contextlib.contextmanager
def count_optimizer_steps() -> Iterator[list[int]]:
    calls = [0]

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        calls[0] += 1

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


# ----------------------------------------------------------------------------- every script


BAD_FLAG_RUN = "transformer_finetune --steps 0"


@pytest.fixture(scope="module")
def cli_runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every script once from the command line, started together (most of their time is importing torch)."""
    commands = {name: [sys.executable, f"sample_runs/{name}.py", *TINY[name], "--steps", "3", "--log-every", "1"]
                for name in SCRIPTS}
    commands[BAD_FLAG_RUN] = [sys.executable, "sample_runs/transformer_finetune.py", "--steps", "0"]
    procs = {key: subprocess.Popen(cmd, cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for key, cmd in commands.items()}
    results = {}
    for key, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[key] = subprocess.CompletedProcess(commands[key], proc.returncode, out, err)
    return results


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_trains_from_the_command_line(name: str, cli_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = cli_runs[name]
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = LOSS_LINE.findall(proc.stdout)
    assert [int(s) for s, _, _ in steps] == [1, 2, 3], proc.stdout
    assert all(math.isfinite(float(loss)) for _, _, loss in steps), proc.stdout
    assert "done: 3 steps" in proc.stdout


def test_bad_flag_from_the_command_line(cli_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = cli_runs[BAD_FLAG_RUN]
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "transformer_finetune.py: error: argument --steps: must be >= 1, got 0 (see --help)"
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_layout(name: str) -> None:
    source = (SAMPLE_RUNS / f"{name}.py").read_text()
    module = script(name)
    assert module.__doc__ and len(module.__doc__) > 200, "module docstring explains what it imitates"
    assert 'if __name__ == "__main__":\n    main()' in source
    assert "backward()" in source and "zero_grad(set_to_none=True)" in source
    assert "optimizer.step()" in source or "scaler.step(optimizer)" in source
    assert "model = " in source or "model: " in source
    assert not (SAMPLE_RUNS / "__init__.py").exists()


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_the_common_flags(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        script(name).main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--steps", "--seed", "--device", "--log-every"):
        assert flag in out


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize(("argv", "needle"), [
    (["--steps", "0"], "--steps"),
    (["--steps", "-3"], "--steps"),
    (["--steps", "many"], "--steps"),
    (["--log-every", "0"], "--log-every"),
    (["--device", "tpu"], "--device"),
])
def test_bad_flags_exit_with_one_line(name: str, argv: list[str], needle: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        script(name).main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and needle in err, err


@pytest.mark.parametrize(("name", "argv"), [
    ("gaussian_splat", ["--num-gaussians", "0"]),
    ("gaussian_splat", ["--sh-degree", "4"]),
    ("gaussian_splat", ["--fragmentation", "sometimes"]),
    ("transformer_finetune", ["--batch-size", "-1"]),
    ("transformer_finetune", ["--d-model", "30", "--n-heads", "4"]),
    ("transformer_finetune", ["--dtype", "fp8"]),
    ("transformer_finetune", ["--lora-r", "-2"]),
    ("video_pipeline", ["--max-frames", "1"]),
    ("video_pipeline", ["--resolution", "30"]),
    ("image_fit", ["--resolution", "0"]),
    ("image_fit", ["--batch-pixels", "-5"]),
])
def test_bad_sizes_are_rejected(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        script(name).main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("name", SCRIPTS)
def test_device_cuda_without_cuda_is_a_clear_error(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        script(name).main(["--device", "cuda"])
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


# ----------------------------------------------------------------------------- gaussian_splat


def test_gaussian_splat_fits_a_view() -> None:
    result = run("gaussian_splat", "--views", "1", steps=12)
    assert result["losses"][-1] < 0.9 * result["losses"][0]


def test_gaussian_splat_sh_dominates_and_degree_sets_its_size() -> None:
    module = script("gaussian_splat")
    model = module.GaussianModel(100, 3, 32, 1, torch.float32, torch.Generator().manual_seed(0))
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    assert sizes["sh"] == 100 * 16 * 3
    assert sizes["sh"] > sum(sizes.values()) / 2
    assert run("gaussian_splat", "--sh-degree", "1", steps=1)["sh_shape"] == (1500, 4, 3)


def test_gaussian_splat_optimize_memory_stores_sh_in_fp16() -> None:
    full = run("gaussian_splat", steps=2)
    half = run("gaussian_splat", "--optimize-memory", steps=2)
    assert full["sh_dtype"] == "torch.float32"
    assert half["sh_dtype"] == "torch.float16"
    assert half["sh_bytes"] * 2 == full["sh_bytes"]
    assert all(math.isfinite(v) for v in half["losses"])


@pytest.mark.parametrize(("mode", "releases"), [("minimal", 4), ("normal", 0), ("aggressive", 0)])
def test_gaussian_splat_fragmentation_schedule(mode: str, releases: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    result = run("gaussian_splat", "--fragmentation", mode, steps=4)
    assert result["cache_releases"] == releases
    assert calls == []  # a no-op on a CPU
    assert (result["scratch_bytes"] > 0) == (mode == "aggressive")


def test_gaussian_splat_densify_grows_parameters_and_adam_state() -> None:
    result = run("gaussian_splat", "--densify-every", "2", "--densify-fraction", "0.2", steps=5)
    assert result["densifications"] == 2
    assert result["num_gaussians"] == 1500 + 300 + 360
    assert result["optimizer_state_rows"] == [result["num_gaussians"]]
    assert all(math.isfinite(v) for v in result["losses"])


# ----------------------------------------------------------------------------- transformer_finetune


def test_transformer_learns_the_bigram_language() -> None:
    result = run("transformer_finetune", steps=15)
    assert result["losses"][-1] < result["losses"][0] - 0.15
    assert result["tied_weights"]


def test_transformer_lora_trains_only_adapters() -> None:
    full = run("transformer_finetune", steps=1)
    lora = run("transformer_finetune", "--lora-r", "4", steps=2)
    assert full["trainable_params"] == full["total_params"]
    # one layer, q and v adapters: 2 x (4x32 + 32x4) = 512 trainable parameters
    assert lora["trainable_params"] == 512
    assert lora["total_params"] == full["total_params"] + 512
    assert lora["optimizer_state_tensors"] == 4 * 3  # step, exp_avg, exp_avg_sq per adapter tensor


def test_transformer_gradient_accumulation_steps_the_optimizer_every_k_micro_batches() -> None:
    with count_optimizer_steps() as plain:
        one = run("transformer_finetune", steps=4)
    with count_optimizer_steps() as accumulated:
        two = run("transformer_finetune", "--gradient-accumulation-steps", "2", steps=4)
    assert plain[0] == one["micro_batches"] == 4
    assert accumulated[0] == two["optimizer_steps"] == 4
    assert two["micro_batches"] == 8  # optimizer.step() half as often as forward/backward


def test_transformer_gradient_checkpointing_saves_fewer_activations() -> None:
    module = script("transformer_finetune")
    parser = module.build_parser()
    inputs, targets = module.BigramData(64, 0).batch(4, 16)

    def saved_bytes(*flags: str) -> tuple[int, float]:
        args = parser.parse_args([*TINY["transformer_finetune"], "--n-layers", "2", *flags])
        torch.manual_seed(0)
        model = module.build_model(args, torch.device("cpu"))
        total = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = module.lm_loss(model, inputs, targets, None)
        loss.backward()
        return total[0], loss.item()

    plain, plain_loss = saved_bytes()
    ckpt, ckpt_loss = saved_bytes("--gradient-checkpointing")
    assert ckpt < plain / 2
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-5)
    assert run("transformer_finetune", "--gradient-checkpointing", steps=2)["final_loss"] > 0


def test_transformer_amp_uses_bf16_autocast_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    result = run("transformer_finetune", "--amp", "--dtype", "fp16", steps=2)
    assert result["autocast_dtype"] == "torch.bfloat16"
    assert result["grad_scaler"] is False  # GradScaler only for fp16 on CUDA
    assert all(math.isfinite(v) for v in result["losses"])
    assert "CPU autocast runs in bf16" in capsys.readouterr().err
    assert run("transformer_finetune", "--amp", "--dtype", "fp32", steps=1)["autocast_dtype"] is None


def test_transformer_leak_keeps_a_graph_and_logits_per_step() -> None:
    assert run("transformer_finetune", steps=2)["leaked_tensors"] == 0
    result = run("transformer_finetune", "--leak", steps=3)
    assert result["leaked_tensors"] == 2 * 3
    assert result["leaked_bytes"] == 3 * 4 * 16 * 64 * 4  # steps x batch x seq x vocab x fp32


# ----------------------------------------------------------------------------- video_pipeline


def test_video_pipeline_marks_its_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    module = script("video_pipeline")
    seen: list[str] = []

    @contextlib.contextmanager
    def recorder(name: str) -> Iterator[None]:
        seen.append(name)
        yield

    monkeypatch.setattr(module, "stage", recorder)
    result = run("video_pipeline", "--max-frames", "5", steps=2)
    assert seen == ["load", "encode", "fuse", "decode", "backward", "optimizer"] * 2
    assert result["clip_shape"] == (2, 5, 3, 16, 16)
    assert all(math.isfinite(v) for v in result["losses"])


@pytest.mark.parametrize("memtop_module", [None, types.ModuleType("memtop")], ids=["no-memtop", "no-stage-api"])
def test_video_pipeline_runs_without_memtop_stage(memtop_module: types.ModuleType | None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "memtop", memtop_module)  # None makes `import memtop` fail
    module = load("video_pipeline", "sample_run_video_without_memtop")
    try:
        with module.stage("load"):
            pass
        with contextlib.redirect_stdout(sys.stderr):
            result = module.main([*TINY["video_pipeline"], "--steps", "1"])
        assert result["steps"] == 1
    finally:
        sys.modules.pop("sample_run_video_without_memtop", None)


def test_video_pipeline_learns() -> None:
    result = run("video_pipeline", steps=12)
    assert result["losses"][-1] < result["losses"][0]


# ----------------------------------------------------------------------------- image_fit


def test_image_fit_learns() -> None:
    result = run("image_fit", "--hidden", "32", "--lr", "1e-3", steps=15)
    assert result["losses"][-1] < 0.7 * result["losses"][0]


@pytest.mark.parametrize(("flags", "check"), [
    (["--use-amp"], lambda r: r["output_dtype"] == "torch.bfloat16" and r["grad_scaler"] is False),
    ([], lambda r: r["output_dtype"] == "torch.float32" and r["autocast_dtype"] is None),
    (["--batch-pixels", "100"], lambda r: r["pixels_per_step"] == 100),
    (["--batch-pixels", "0"], lambda r: r["pixels_per_step"] == 16 * 16),
    (["--encoding", "fourier"], lambda r: math.isfinite(r["final_loss"])),
])
def test_image_fit_flags(flags: list[str], check: Callable[[dict[str, Any]], bool]) -> None:
    result = run("image_fit", *flags, steps=2)
    assert check(result), result
    assert all(math.isfinite(v) for v in result["losses"])
