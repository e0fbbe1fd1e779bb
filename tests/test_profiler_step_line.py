"""The step record's fast serialization writes exactly the bytes of the general JSON encoder."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from typing import Any

import pytest

from memtop.profiler.step_line import STEP_KEYS, StepLineEncoder
from memtop.profiler.writers import RecordEncoder
from memtop.runs.records import StepRecord


def _json_line(rec: dict[str, Any]) -> bytes:
    """What the general encoder writes: compact JSON, a non-empty large-tensor list last."""
    out = dict(rec)
    large = out.get("large_tensors")
    if isinstance(large, list) and large:
        del out["large_tensors"]
        out["large_tensors"] = large
    return (json.dumps(out, separators=(",", ":"), allow_nan=False, default=str) + "\n").encode()


def _cpu_record(step: int = 7) -> dict[str, Any]:
    moment = {"allocated": None, "parameters": 790016, "gradients": 0, "optimizer_state": 1580064, "activations": 16384}
    return {
        "type": "step", "schema": 1, "rank": 0, "time": 1796168272.0094483, "step": step, "device": "cpu",
        "step_time": 0.0004992485046386719, "allocated": None, "reserved": None, "peak": None,
        "categories": {"parameters": 790016, "gradients": 0, "optimizer_state": 1580064, "activations": 16384, "other": None},
        "peak_point": "forward_end", "activations_step": 5, "measured_step": 5, "tracked": 2386464,
        "fragmentation_bytes": None, "fragmentation_pct": None, "inactive_split_bytes": None,
        "device_used": 411029504, "device_total": 25324732416, "large_tensors": [],
        "moments": {"forward_end": moment, "optimizer_step": dict(moment, activations=0)},
        "highwater": {"parameters": 790016, "gradients": 0, "optimizer_state": 1580064, "activations": 16384},
        "sample_every": 4,
    }  # fmt: skip


def _cuda_record(step: int = 3) -> dict[str, Any]:
    rec = _cpu_record(step)
    rec.update(
        device="cuda:0", allocated=123456789, reserved=134217728, peak=130000000, fragmentation_bytes=10760939,
        fragmentation_pct=8.017349243164062, inactive_split_bytes=2097152, device_used=None, step_time=None,
        large_tensors=[{"name": 'w "quoted" \u00e9', "category": "parameters", "bytes": 4194304, "shape": [1024, 1024], "dtype": "torch.float32"}],
    )  # fmt: skip
    rec["categories"]["other"] = 5
    rec["moments"] = {"backward_end": {"allocated": 1, "parameters": 2, "gradients": 3, "optimizer_state": 4, "activations": 5}}
    return rec


def test_the_writers_keys_are_the_typed_models_fields() -> None:
    """What the hook writes and what readers decode are the same keys (runs/records.py spells them)."""
    fields = {f.name for f in dataclasses.fields(StepRecord)} - {"doc"}
    first_record_only = {"model_kinds", "model_kinds_more", "optimizer"}  # the general encoder writes them
    assert set(STEP_KEYS) - {"type"} == fields - first_record_only


def test_step_keys_are_the_records_keys() -> None:
    assert tuple(_cpu_record()) == STEP_KEYS


@pytest.mark.parametrize("make", [_cpu_record, _cuda_record])
def test_fast_line_is_byte_identical_to_json(make: Any) -> None:
    enc = RecordEncoder(deltas=False)
    for step in range(1, 6):
        rec = make(step)
        rec["time"] += step * 0.0173
        if step % 2:
            rec["device_used"] = None if rec["device_used"] is None else rec["device_used"] + 4096 * step
        if step == 4:  # a measured step: the steady parts change, and back
            rec["categories"]["activations"] = 99
            rec["moments"] = {**rec["moments"], "manual_step": dict(next(iter(rec["moments"].values())))}
        assert StepLineEncoder().encode(copy.deepcopy(rec), json.dumps(rec["large_tensors"], separators=(",", ":"))) is not None
        assert enc.encode(rec) == _json_line(rec)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(sample_every=True),  # a bool: json writes true
        lambda r: r["categories"].update(other=2**70),
        lambda r: r.update(extra="x"),  # a key the fast path does not know
        lambda r: r.update(device="None%s,inf"),  # strings that look like what the template fills in
        lambda r: r["moments"].update({"odd": {"parameters": 1}}),
        lambda r: r.update(peak_point="nan"),
        lambda r: r.pop("highwater"),
    ],
)
def test_other_shapes_fall_back_to_the_general_encoder(change: Any) -> None:
    enc = RecordEncoder(deltas=False)
    enc.encode(_cpu_record(1))  # cache the steady parts first
    rec = _cpu_record(2)
    change(rec)
    assert enc.encode(rec) == _json_line(rec)


def test_a_value_equal_to_the_cached_one_but_of_another_type_is_formatted_again() -> None:
    enc = RecordEncoder(deltas=False)
    rec = _cpu_record(1)
    rec["tracked"] = 1
    enc.encode(rec)
    rec["tracked"] = 1.0  # == 1, but json writes 1.0
    assert enc.encode(rec) == _json_line(rec)
    assert b'"tracked":1.0,' in enc.encode(rec)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_as_json_refuses_them(bad: float) -> None:
    rec = _cpu_record()
    rec["step_time"] = bad
    assert StepLineEncoder().encode(rec, "[]") is None
    with pytest.raises(ValueError):
        RecordEncoder(deltas=False).encode(rec)
