"""`memtop fit` end to end on CPU: bad input (one line, exit 2), probes that OOM or crash, the
scaling flag picked when --vary is not given, the text and JSON outputs, and a prediction at 4x
the largest probe checked against a real run (one case of benchmarks/fit_validation.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(Path(__file__).resolve().parent / "scripts" / "fit_train.py")
sys.path.insert(0, str(REPO / "benchmarks"))

import fit_validation as fv  # noqa: E402


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    """Exit ``code`` and one ``memtop:`` line, the last one on stderr (the probes' progress lines may precede it)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("memtop:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert needle in errors[0], errors[0]
    assert all(ln.startswith("[memtop fit] ") for ln in lines[:-1]), proc.stderr
    assert "Traceback" not in proc.stderr


def memtop(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMTOP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return subprocess.run([sys.executable, "-m", "memtop", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "no command to run"),
        (["--vary", "batch-size=a,2"], "'a' is not a number"),
        (["--vary", "batch-size=2"], "at least two different values"),
        (["--vary", "batch-size=2,2"], "at least two different values"),
        (["--vary", "batch-size=1.5,2"], "takes whole numbers"),
        (["--vary", "batch-size=0,2"], "values must be positive"),
        (["--vary", "batch-size"], "--vary takes NAME=V1,V2"),
        (["--vary", "batch-size=1,2", "--vary", "steps=1,2"], "one --vary at a time"),
        (["--vary", "no-such-flag=1,2"], "the script has no flag --no-such-flag"),
        (["--vary", "batch-size=1,2", "--at", "x"], "--at: 'x' is not a number"),
        (["--device-memory", "12XB"], "not a memory size"),
        (["--steps", "0"], "must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    child = ["--", sys.executable, SCRIPT] if args else []
    proc = memtop("fit", "--runs-dir", str(tmp_path), *args, *child)
    assert_one_line_error(proc, 2, needle)
    assert not (tmp_path / "fits").exists()


def test_no_scaling_flag_says_what_to_pass(tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text("import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr', type=float, default=0.1)\np.parse_args()\n")
    proc = memtop("fit", "--runs-dir", str(tmp_path / "runs"), "--", sys.executable, str(script))
    assert_one_line_error(proc, 2, "pass one with --vary NAME=V1,V2,V3")


def test_a_value_the_script_rejects_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = memtop("fit", "--json", "--no-savings", "--steps", "2", "--runs-dir", str(tmp_path), "--vary", "batch-size=100,200", "--", sys.executable, SCRIPT)
    assert_one_line_error(proc, 2, "the script rejected --batch-size 100: ")
    assert "at most 64" in proc.stderr.splitlines()[-1]  # the script's own message


def test_crashed_and_oom_probes_are_left_out_and_the_fit_says_so(tmp_path: Path) -> None:
    proc = memtop("fit", "--json", "--no-savings", "--steps", "2", "--runs-dir", str(tmp_path), "--vary", "batch-size=1,2,4,8,16",
                  "--", sys.executable, SCRIPT, "--crash-at", "2", "--oom-at", "8")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    status = {p["value"]: p["status"] for p in data["probes"]}
    assert status == {1: "finished", 2: "failed", 4: "finished", 8: "oom", 16: "skipped"}
    assert "the fit uses 2 of 5 probes" in data["notes"]
    assert any(n.startswith("probe batch-size=2 not used: failed") and "deliberate crash" in n for n in data["notes"])
    assert any(n.startswith("probe batch-size=8 not used: oom") for n in data["notes"])
    assert [p["value"] for p in data["predictions"] if p["probed"]] == [1, 4]


def test_fewer_than_two_usable_probes_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = memtop("fit", "--json", "--no-savings", "--steps", "2", "--runs-dir", str(tmp_path), "--vary", "batch-size=1,2",
                  "--", sys.executable, SCRIPT, "--oom-at", "1")
    assert_one_line_error(proc, 2, "fewer than two usable probes")
    assert "batch-size=1 oom" in proc.stderr and "batch-size=2 skipped" in proc.stderr


def test_without_vary_the_batch_size_is_picked_and_the_text_report_is_complete(tmp_path: Path) -> None:
    proc = memtop("fit", "--no-savings", "--steps", "2", "--runs-dir", str(tmp_path), "--at", "64", "--device-memory", "2GB",
                  "--", sys.executable, SCRIPT, "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "varying --batch-size (batch size), found among the script's flags" in out
    for heading in ("PROBES", "FIT PER CATEGORY", "PREDICTED PEAK", "THIS DEVICE", "COMMON CARDS"):
        assert heading in out
    assert "largest --batch-size that fits:" in out and "(--device-memory)" in out
    assert "fitted peak" in out  # the plotext curve
    # progress: one plain line per probe (stderr is not a terminal here)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[memtop fit] probe ")]
    assert [ln.split(":")[0] for ln in lines] == ["[memtop fit] probe 1/3 batch-size=2", "[memtop fit] probe 2/3 batch-size=4", "[memtop fit] probe 3/3 batch-size=8"]
    record = next((tmp_path / "fits").glob("*.json"))
    data = json.loads(record.read_text())
    assert [p["value"] for p in data["probes"]] == [2, 4, 8]
    # the probes are ordinary runs: `memtop runs` lists them, the fit record is not one
    listed = memtop("runs", "--runs-dir", str(tmp_path))
    assert listed.returncode == 0
    assert len([ln for ln in listed.stdout.splitlines() if ln.split(" ", 1)[0].endswith(("fit-batch-size-2", "fit-batch-size-4", "fit-batch-size-8"))]) == 3


def test_prediction_at_4x_the_largest_probe_is_within_10_percent_of_a_real_run(tmp_path: Path) -> None:
    """Image fit over --resolution (pixels: quadratic): probes 8, 16, 32; a real run at 128."""
    case = next(c for c in fv.CASES if c.name == "image-resolution")
    result = fv.run_case(case, tmp_path, steps=2)
    assert result.error == "", result.error
    assert result.ok, f"predicted {result.predicted}, measured {result.measured} ({result.relative_error:+.1%})"
    data = result.data
    assert data["flag"] == "--resolution" and data["measure"] == "tracked"
    values = [p["value"] for p in data["predictions"]]
    assert values == [8, 16, 32, 128]
    assert all(isinstance(p["peak_bytes"], int) for p in data["predictions"])
    acts = data["fit"]["categories"]["activations"]
    assert acts["kind"] == "quadratic" and acts["residual_bytes"] >= 0
    assert data["fit"]["categories"]["parameters"]["kind"] == "constant"
    probed = {p["value"]: p for p in data["predictions"] if p["probed"]}
    for probe in data["probes"]:
        assert probed[probe["value"]]["measured_peak_bytes"] == probe["peak_bytes"]
    # each probe is a normal run directory that `memtop analyze` reads
    analyzed = memtop("analyze", data["probes"][0]["run_dir"], "--json")
    assert analyzed.returncode == 0, analyzed.stderr
    assert json.loads(analyzed.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.name for c in fv.CASES if c.name != "image-resolution"])
def test_prediction_within_10_percent_other_samples(name: str, tmp_path: Path) -> None:
    case = next(c for c in fv.CASES if c.name == name)
    result = fv.run_case(case, tmp_path)
    assert result.ok, f"{result.error} predicted {result.predicted}, measured {result.measured}"


@pytest.mark.slow
def test_savings_are_measured_by_one_probe_each_where_the_script_has_the_flag(tmp_path: Path) -> None:
    """The transformer has --amp, --gradient-checkpointing and --lora-r: one probe each at the largest
    value, each a run of its own; fp16 storage has no flag and is estimated; accumulation is arithmetic."""
    script = str(REPO / "sample_runs" / "transformer_finetune.py")
    proc = memtop("fit", "--json", "--steps", "2", "--runs-dir", str(tmp_path), "--vary", "batch-size=1,2,4",
                  "--", sys.executable, script, "--device", "cpu", timeout=900)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    how = {s["key"]: s["how"] for s in data["savings"]}
    assert how == {"amp": "measured", "checkpointing": "measured", "accumulation": "arithmetic", "lora": "measured", "fp16_storage": "estimated"}
    saving_probes = {p["saving"]: p for p in data["probes"] if p["saving"]}
    assert set(saving_probes) == {"amp", "checkpointing", "lora"}
    for key, p in saving_probes.items():
        assert p["value"] == 4 and p["used"] and (tmp_path / p["run_id"] / "meta.json").exists(), key
    base4 = next(p for p in data["probes"] if p["saving"] is None and p["value"] == 4)
    # LoRA: AdamW state only for the adapters; checkpointing: fewer saved activations at the end of forward
    assert saving_probes["lora"]["categories"]["optimizer_state"] < base4["categories"]["optimizer_state"] / 10
    assert saving_probes["checkpointing"]["moments"]["forward_end"]["activations"] < base4["moments"]["forward_end"]["activations"]
    for row in data["cards"]["rows"]:
        assert row["savings"]["lora"]["value"] >= row["as_is"]["value"]
        assert row["savings"]["checkpointing"]["value"] >= row["as_is"]["value"]
        assert "accumulation" not in row["savings"]


@pytest.mark.gpu
def test_on_cuda_the_allocator_peak_at_4x_is_predicted_within_10_percent(tmp_path: Path) -> None:
    """The same check on CUDA: the allocator's peak (with `other`), the margin measured from the probes."""
    case = next(c for c in fv.CASES if c.name == "transformer-batch")
    result = fv.run_case(case, tmp_path, device="cuda")
    assert result.error == "", result.error
    data = result.data
    assert data["measure"] == "allocator_peak" and data["fit"]["other"] is not None
    assert data["capacity"]["margin"]["measured"] is True
    assert result.ok, f"predicted {result.predicted}, measured {result.measured} ({result.relative_error:+.1%})"
