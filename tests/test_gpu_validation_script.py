"""scripts/gpu_validation.sh without a GPU: the dry run, the no-CUDA line, bad input, the runner's
isolation of failing/hanging steps, the identity checker, and memtop's CLI without textual.

The validation itself runs only on a GPU machine (docs/validation/README.md); CI keeps it from rotting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, only_run

from memtop.runs.decode import decode_line
from memtop.runs.records import StepRecord
from memtop.validation.checks import check_run, nvml_below_reserved, step_violations
from memtop.validation.plan import QUICK_BUDGET_S, Step, build_plan, gpu_test_files
from memtop.validation.runner import run_plan

SCRIPT = REPO / "scripts" / "gpu_validation.sh"
STEP_NAMES = ["env", "pytest-gpu", "samples", "oom", "nvml", "fragmentation", "disk-full", "overhead", "advisor", "fit"]


def run_script(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=full, stdin=subprocess.DEVNULL)


def test_dry_run_lists_every_step_and_runs_nothing(tmp_path: Path) -> None:
    out = run_script(str(tmp_path / "out"), "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    for name in STEP_NAMES:
        assert f". {name} (timeout" in out.stdout
    assert "memtop.validation.tasks.pytest_gpu" in out.stdout
    assert not (tmp_path / "out").exists()


def test_quick_dry_run_is_the_first_half_within_three_minutes(tmp_path: Path) -> None:
    out = run_script("--quick", "--dry-run")
    assert out.returncode == 0, out.stderr
    listed = [name for name in STEP_NAMES if f". {name} (timeout" in out.stdout]
    assert listed == ["env", "pytest-gpu", "samples", "oom", "nvml"]
    assert f"total budget {QUICK_BUDGET_S:.0f} s" in out.stdout and QUICK_BUDGET_S < 180
    assert [s.name for s in build_plan(tmp_path, quick=True)] == listed


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_without_cuda_one_line_exit_0_and_nothing_run(tmp_path: Path) -> None:
    out = run_script("out", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and "no CUDA device" in out.stdout and "nothing was run" in out.stdout
    assert out.stderr == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "OUTDIR is required"), (["{tmp}/full"], "is not an empty directory"), (["{tmp}/x", "--only", "nope"], "unknown step nope"),
     (["{tmp}/x", "--budget", "-1"], "--budget must be positive"), (["{tmp}/x", "--bogus"], "unrecognized arguments")],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    out = run_script(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_only_picks_steps_and_keeps_quick_mode(tmp_path: Path) -> None:
    out = run_script("--quick", "--only", "fit,samples", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert ". samples (timeout" in out.stdout and ". fit (timeout" in out.stdout and ". env (timeout" not in out.stdout
    assert "memtop.validation.tasks.fit" in out.stdout and "--quick" in out.stdout


def test_gpu_steps_collect_only_modules_with_gpu_tests() -> None:
    files = gpu_test_files()
    assert "tests/test_cuda.py" in files
    assert "tests/test_gpu_validation_script.py" not in files  # it has no GPU test


def test_every_task_module_of_the_plan_exists(tmp_path: Path) -> None:
    import importlib.util

    for step in build_plan(tmp_path, quick=False):
        if "-m" in step.argv and step.argv[step.argv.index("-m") + 1].startswith("memtop.validation.tasks."):
            assert importlib.util.find_spec(step.argv[step.argv.index("-m") + 1]) is not None, step.name


def _cuda_record(step: int, **changes: Any) -> StepRecord:
    rec = decode_line(json.dumps(_cuda_json(step, **changes)))
    assert isinstance(rec, StepRecord)
    return rec


def _cuda_json(step: int, **changes: Any) -> dict[str, Any]:
    cats = {"parameters": 4096, "gradients": 4096, "optimizer_state": 8192, "activations": 10000, "other": 1808}
    rec: dict[str, Any] = {"type": "step", "step": step, "device": "cuda:0", "allocated": 20000, "reserved": 32768, "peak": 28192,
                           "categories": cats, "fragmentation_bytes": 12768, "fragmentation_pct": 12768 / 32768 * 100,
                           "device_used": 600_000_000, "step_time": 0.05}
    rec.update(changes)
    return rec


def test_identity_checker_accepts_a_consistent_record_and_names_each_broken_identity(tmp_path: Path) -> None:
    assert step_violations(_cuda_record(1)) == []
    bad_sum = _cuda_record(2, peak=28193)
    assert any("sum of categories 28192 != peak 28193" in v for v in step_violations(bad_sum))
    bad_frag = _cuda_record(3, fragmentation_bytes=12767)
    assert any("allocated 20000 + fragmentation_bytes 12767 != reserved 32768" in v for v in step_violations(bad_frag))
    cpu = _cuda_record(4, device="cpu", peak=None, allocated=None)
    assert any("not cuda" in v for v in step_violations(cpu)) and any("peak is None" in v for v in step_violations(cpu))
    below = _cuda_record(5, device_used=1000)
    assert step_violations(below) == [] and nvml_below_reserved(below)  # a stale NVML sample: reported, not failed

    run = tmp_path / "20260101-000000-x"
    run.mkdir()
    lines = [json.dumps(_cuda_json(i)) for i in (1, 2, 4)] + ['{"type": "step", "step"']
    (run / "rank0.jsonl").write_text("\n".join(lines) + "\n")
    checked = check_run(run, expect_steps=3)
    assert checked.steps == 3
    assert any("not 1..3" in v for v in checked.violations)
    assert any("1 lines are not JSON" in v for v in checked.violations)
    assert checked.figures["max_peak"] == 28192 and checked.figures["nvml_minus_reserved_median"] == 600_000_000 - 32768


def _write_result(status: str) -> str:
    return f"import json, sys; open(sys.argv[1] + '/result.json', 'w').write(json.dumps({{'status': '{status}', 'headline': 'h-{status}'}}))"


def test_runner_records_each_failure_and_still_runs_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    py = sys.executable
    steps = [
        Step("ok", "passes", (py, "-c", _write_result("pass"), str(out / "ok")), 30),
        Step("crash", "exits 3 without a result", (py, "-c", "import sys; print('boom'); sys.exit(3)"), 30),
        Step("hang", "sleeps past its timeout", (py, "-c", "import time; time.sleep(120)"), 1.5, min_s=0.5),
        Step("says-fail", "a task reporting a failure", (py, "-c", _write_result("fail"), str(out / "says-fail")), 30),
        Step("late", "no budget left for it", (py, "-c", "pass"), 30, min_s=10_000),
    ]
    out.mkdir()
    outcomes = run_plan(steps, out, budget_s=600, header={"device": "test"}, progress=StringIO())
    assert [(o.step.name, o.status) for o in outcomes] == [("ok", "pass"), ("crash", "fail"), ("hang", "timeout"),
                                                            ("says-fail", "fail"), ("late", "skip")]
    assert "exit code 3: boom" in outcomes[1].headline
    assert outcomes[2].seconds < 60
    summary = (out / "summary.md").read_text()
    for row in ("| ok | PASS |", "| crash | FAIL |", "| hang | TIMEOUT |", "| late | SKIP |"):
        assert row in summary
    assert json.loads((out / "summary.json").read_text())["steps"][0]["headline"] == "h-pass"
    assert (out / "crash" / "log.txt").read_text().splitlines()[-1] == "boom"


BLOCKER = """import sys
# textual, plotext, msgspec and hypothesis are not installed on the GPU machine
for _name in ("textual", "textual_plotext", "plotext", "rich", "msgspec", "hypothesis"):
    sys.modules[_name] = None
"""


def test_hook_cli_and_gpu_tests_work_without_textual(tmp_path: Path) -> None:
    """As on the GPU machine: train --no-tui (the hook), analyze, runs, the validation's dry run and
    the collection of the GPU tests, with the UI packages unimportable in every process."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(REPO)]), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    env.pop("MEMTOP_RUN_DIR", None)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)

    probe = run("-c", "import textual")
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr
    runs = tmp_path / "runs"
    train = run("-m", "memtop", "train", "--no-tui", "--runs-dir", str(runs), "--max-steps", "2", "--",
                sys.executable, "sample_runs/transformer_finetune.py", "--device", "cpu", "--steps", "3", "--n-layers", "1", "--seq-len", "16")
    assert train.returncode == 0, train.stdout + train.stderr
    assert "Traceback" not in train.stderr and "cannot load" not in train.stderr
    run_dir = only_run(runs)
    records = [json.loads(line) for line in (run_dir / "rank0.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in records if r["type"] == "step"] == [1, 2]
    for argv in (("analyze", str(run_dir)), ("analyze", str(run_dir), "--json"), ("runs", "--runs-dir", str(runs))):
        out = run("-m", "memtop", *argv)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (argv, out.stderr)
    assert "PEAK" in run("-m", "memtop", "analyze", str(run_dir)).stdout
    dry = run("-m", "memtop.validation", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    collect = run("-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu", *gpu_test_files())
    assert collect.returncode == 0, collect.stdout[-2000:]
    assert "test_cuda_identities_hold" in collect.stdout


@pytest.mark.parametrize(("boundary", "start"), [(0, 4), (1, 4), (5, 4), (37, 1), (37, 64), (64, 64), (200, 8)])
def test_fit_bisection_finds_the_boundary(boundary: int, start: int) -> None:
    from memtop.validation.tasks.fit import MAX_BATCH, bisect

    asked: list[int] = []

    def fits(b: int) -> bool:
        asked.append(b)
        return b <= boundary

    lo, hi = bisect(fits, start)
    if boundary >= MAX_BATCH:
        assert hi is None and lo <= boundary  # the search stops at MAX_BATCH: "above it"
    else:
        assert (lo, hi) == (boundary, boundary + 1)
    assert len(asked) <= 16


GRANDCHILD_TASK = """
import sys
from memtop.validation.taskkit import run_logged, task_args
args = task_args("a task whose training hangs")
child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"
run_logged([sys.executable, "-c", child, str(args.step_dir / "pid")], args.step_dir / "child.log", 300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def test_a_step_timeout_also_ends_the_processes_its_task_started(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    step = Step("hung-training", "its training never ends", (sys.executable, "-c", GRANDCHILD_TASK, str(out / "hung-training")), 10, min_s=1)
    (outcome,) = run_plan([step], out, budget_s=600, header={}, progress=StringIO())
    assert outcome.status == "timeout"
    pid = int((out / "hung-training" / "pid").read_text())
    assert not _alive(pid)


def test_watch_in_a_terminal_without_textual_is_one_line(tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    run_dir = tmp_path / "runs" / "20260101-000000-x"
    run_dir.mkdir(parents=True)
    (run_dir / "meta.json").write_text(json.dumps({"schema": 1, "run_id": run_dir.name, "command": ["python", "x.py"], "status": "finished"}))
    (run_dir / "rank0.jsonl").write_text("")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), str(REPO)]))
    primary, secondary = os.openpty()  # stdin and stdout a terminal, as for a person at a shell
    try:
        proc = subprocess.run([sys.executable, "-m", "memtop", "watch", str(run_dir)], cwd=REPO, stdin=secondary, stdout=secondary,
                              stderr=subprocess.PIPE, text=True, timeout=60, env=env)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "the dashboard cannot start" in proc.stderr and "memtop analyze" in proc.stderr, proc.stderr


def test_fit_prediction_is_read_from_fits_json() -> None:
    from memtop.validation.tasks.fit import find_prediction

    report = {"predictions": [{"value": 8, "peak_bytes": 1}], "capacity": {"memory_bytes": 1 << 34, "largest_value": {"value": 23, "unbounded": False}}}
    assert find_prediction(report) == 23
    assert find_prediction({"capacity": {"largest_value": None}, "result": {"max_fit": 5}}) == 5
    assert find_prediction({"capacity": {"largest_value": {"value": None}}}) is None

