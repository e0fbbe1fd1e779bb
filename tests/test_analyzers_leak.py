"""Leak verdict on synthetic runs: real growth is found, flat (even noisy) runs give no alarm."""

from __future__ import annotations

import json
import random
from pathlib import Path

from runfactory import GiB, MiB, make_run

from memtop.analyzers import leak
from memtop.analyzers.series import rank_series
from memtop.runs.format import rank_file_name
from memtop.runs.reader import load_run


def _verdict(run: Path) -> leak.LeakReport:
    return leak.analyze(rank_series(load_run(run)))


def test_flat_run_is_silent(tmp_path: Path) -> None:
    rep = _verdict(make_run(tmp_path, steps=200))
    assert rep.verdict == "none"
    assert rep.growing_series == []
    assert rep.steps_until_full is None


def test_noisy_flat_run_is_silent(tmp_path: Path) -> None:
    rng = random.Random(7)
    noise = {s: rng.randint(-300, 300) * MiB for s in range(1, 301)}
    rep = _verdict(make_run(tmp_path, steps=300, per_step=lambda s, r: {"activations": 6 * GiB + noise[s], "other": 512 * MiB + noise[s] // 3}))
    assert rep.verdict == "none", rep.message


def test_warmup_growth_is_not_a_leak(tmp_path: Path) -> None:
    # optimizer state appears at step 2 and activations settle over the first steps
    rep = _verdict(make_run(tmp_path, steps=60, per_step=lambda s, r: {"optimizer_state": 0 if s < 2 else 4 * GiB, "activations": min(s, 5) * GiB}))
    assert rep.verdict == "none", rep.message


def test_growing_activations_is_a_leak_with_rate_and_time_to_full(tmp_path: Path) -> None:
    rate = 20 * MiB
    run = make_run(tmp_path, steps=100, per_step=lambda s, r: {"activations": 6 * GiB + s * rate})
    rep = _verdict(run)
    assert rep.verdict == "leak"
    assert "activations" in rep.growing_categories
    assert "parameters" not in rep.growing_categories
    assert rep.bytes_per_step is not None and abs(rep.bytes_per_step - rate) / rate < 0.02
    assert rep.steps_until_full is not None and rep.steps_until_full > 0
    # the fitted rate reaches the device's total within the reported number of steps (± a step)
    last = json.loads((run / rank_file_name(0)).read_text().splitlines()[-1])
    used = max(last["device_used"], last["reserved"], last["peak"])
    assert abs(used + rep.steps_until_full * rep.bytes_per_step - last["device_total"]) <= 2 * rate


def test_named_growing_tensor(tmp_path: Path) -> None:
    def per_step(s: int, r: int) -> dict[str, int]:
        return {"other": 512 * MiB + s * 8 * MiB}

    run = make_run(tmp_path, steps=50, per_step=per_step)
    # add a growing named tensor to the records (a list of kept logits)
    path = run / rank_file_name(0)
    lines = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        rec["large_tensors"].append({"name": "kept_logits", "category": "other", "bytes": rec["step"] * 8 * MiB, "shape": [rec["step"], 1024, 2048], "dtype": "torch.float32"})
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")
    rep = _verdict(run)
    assert rep.verdict == "leak"
    assert rep.growing_categories == ["other"]
    assert rep.tensors and rep.tensors[0].name == "kept_logits"


def test_cpu_rss_growth_is_a_leak_when_steady(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=40, device="cpu", per_step=lambda s, r: {})
    path = run / rank_file_name(0)
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for rec in recs:
        rec["device_used"] = 500 * MiB + rec["step"] * 3 * MiB
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = _verdict(run)
    assert rep.verdict == "leak"
    assert rep.growing_series == ["device_used"]
    assert "RSS" in rep.message


def test_model_growth_is_not_called_a_leak(tmp_path: Path) -> None:
    # densification: parameters, gradients and optimizer state grow in steps
    rep = _verdict(make_run(tmp_path, steps=60, per_step=lambda s, r: {"parameters": GiB + (s // 10) * 100 * MiB, "gradients": GiB + (s // 10) * 100 * MiB, "optimizer_state": 2 * GiB + (s // 10) * 200 * MiB}))
    assert rep.verdict == "model_growth", rep.message


def test_short_run_is_insufficient(tmp_path: Path) -> None:
    rep = _verdict(make_run(tmp_path, steps=5))
    assert rep.verdict == "insufficient_data"
    assert "needs at least" in rep.message


def test_a_leak_on_one_rank_is_reported(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=60, ranks=2, per_step=lambda s, r: {"activations": 6 * GiB + (s * 30 * MiB if r == 1 else 0)})
    rep = _verdict(run)
    assert rep.verdict == "leak" and rep.rank == 1


def test_growing_fragmentation_is_not_a_leak(tmp_path: Path) -> None:
    # reserved (and the NVML figure with it) grows by 50 MiB a step while nothing live grows
    rep = _verdict(make_run(tmp_path, steps=60, per_step=lambda s, r: {"fragmentation": 3 * GiB + s * 50 * MiB}))
    assert rep.verdict == "none", rep.message
    assert "fragmentation" in rep.message
