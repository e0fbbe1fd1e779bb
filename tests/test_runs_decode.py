"""The one decode step: every line becomes a typed record or a counted skip with its reason."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from runfactory import step_record

from memtop.runs.checks import MAX_LINE
from memtop.runs.decode import Skip, decode_line
from memtop.runs.flag_entry import flags_to_json
from memtop.runs.format import PEAK_POINTS
from memtop.runs.meta_decode import decode_meta
from memtop.runs.reader import load_run
from memtop.runs.records import (
    Categories,
    ExitRecord,
    Highwater,
    LargeTensor,
    OomRecord,
    RunMeta,
    StageRecord,
    StepRecord,
    WarningRecord,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs"


def _line(rec: dict[str, Any]) -> str:
    return json.dumps(rec, separators=(",", ":"))


def _reason(line: str | bytes) -> str:
    got = decode_line(line)
    assert isinstance(got, Skip), got
    return got.reason


def test_recorded_fixture_reads_whole_and_typed() -> None:
    """The recorded format-v1 fixtures decode with no skip, and every typed figure equals the JSON."""
    for run in sorted(FIXTURES.iterdir()):
        data = load_run(run)
        assert data.bad_lines == 0 and not data.skipped, data.warnings
        raw = [json.loads(line) for line in (run / "rank0.jsonl").read_text().splitlines() if line.strip()]
        recs = data.records[0]
        assert len(recs) == len(raw)
        for rec, obj in zip(recs, raw, strict=True):
            assert rec.type == obj["type"] and rec.as_json() == obj
            if isinstance(rec, StepRecord):
                assert rec.step == obj["step"] and rec.peak == obj["peak"] and rec.tracked == obj["tracked"]
                assert rec.categories.as_dict() == obj["categories"]
                assert [t.as_dict() for t in rec.large_tensors] == obj["large_tensors"]
                assert {k: vars_of(m) for k, m in rec.moments.items()} == obj["moments"]
                assert rec.measured_step == obj.get("measured_step")
                assert (rec.highwater._asdict() if rec.highwater else None) == obj.get("highwater")
        assert data.meta is not None and data.meta.command and data.meta.run_id == run.name


def vars_of(m: object) -> dict[str, Any]:
    return {k: getattr(m, k) for k in ("allocated", "parameters", "gradients", "optimizer_state", "activations")}


def test_every_record_type_decodes_to_its_class() -> None:
    lines = {
        "step": _line(step_record(3)),
        "stage": _line({"type": "stage", "schema": 1, "rank": 0, "time": 1.0, "name": "decode", "step": 2, "duration": 0.5, "before": 10, "after": 20, "peak": 30, "measure": "rss"}),
        "oom": _line({"type": "oom", "schema": 1, "rank": 0, "time": 1.0, "message": "CUDA out of memory", "requested_bytes": 1 << 30, "step": 4, "device": "cuda:0", "categories": {"parameters": 5, "gradients": 0, "optimizer_state": 0, "activations": 1, "other": None}, "allocated": 6, "reserved": 8, "device_free": None, "large_tensors": [{"name": "w", "category": "parameters", "bytes": 5, "shape": [5], "dtype": "torch.uint8"}]}),
        "warning": _line({"type": "warning", "schema": 1, "rank": 0, "time": 1.0, "message": "hook off", "source": "hook", "disabled": True}),
        "exit": _line({"type": "exit", "schema": 1, "rank": 0, "time": 1.0, "reason": "normal", "exception": None, "steps": 4, "pid": 123, "hook_cpu_seconds": 0.25}),
    }
    classes = {"step": StepRecord, "stage": StageRecord, "oom": OomRecord, "warning": WarningRecord, "exit": ExitRecord}
    for kind, line in lines.items():
        rec = decode_line(line)
        assert not isinstance(rec, Skip) and isinstance(rec, classes[kind]) and rec.type == kind
    oom = decode_line(lines["oom"])
    assert isinstance(oom, OomRecord)
    assert oom.categories == Categories(5, 0, 0, 1, None) and oom.large_tensors == (LargeTensor("w", "parameters", 5, (5,), "torch.uint8"),)
    assert oom.requested_bytes == 1 << 30 and oom.device == "cuda:0" and oom.as_json()["device"] == "cuda:0"
    stage = decode_line(lines["stage"])
    assert isinstance(stage, StageRecord) and (stage.name, stage.before, stage.peak) == ("decode", 10, 30)


def test_older_lines_without_schema_or_new_keys_read() -> None:
    old = step_record(1)
    del old["schema"]
    for k in ("moments", "tracked", "sample_every", "activations_step", "peak_point"):
        old.pop(k, None)
    rec = decode_line(_line(old))
    assert isinstance(rec, StepRecord) and rec.schema == 1 and rec.tracked is None and rec.moments == {}
    assert rec.level == rec.peak


def test_highwater_measured_step_and_every_peak_point_decode() -> None:
    """The hook's newer step keys (docs/run-format.md) become typed fields."""
    for point in PEAK_POINTS:
        rec = step_record(4)
        rec.update({"peak_point": point, "measured_step": 3, "highwater": {"parameters": 10, "gradients": 20, "optimizer_state": 0, "activations": 40}})
        got = decode_line(_line(rec))
        assert isinstance(got, StepRecord), got
        assert got.peak_point == point and got.measured_step == 3
        assert got.highwater == Highwater(parameters=10, gradients=20, optimizer_state=0, activations=40)
        assert got.as_json() == rec
    rec = step_record(5)
    rec.update({"measured_step": None, "highwater": {"parameters": 1, "activations": 2, "newer_category": 3}})
    got = decode_line(_line(rec))
    assert isinstance(got, StepRecord) and got.measured_step is None
    assert got.highwater == Highwater(1, None, None, 2)  # a missing category reads as None; an extra one is kept in the JSON
    old = decode_line(_line(step_record(6)))
    assert isinstance(old, StepRecord) and old.highwater is None and old.measured_step is None
    assert old.model_kinds is None and old.optimizer is None
    first = step_record(1)
    first.update({"model_kinds": ["Embedding", "Linear"], "model_kinds_more": 2, "optimizer": ["AdamW", "Adam"]})
    got = decode_line(_line(first))
    assert isinstance(got, StepRecord) and got.model_kinds == ("Embedding", "Linear") and got.model_kinds_more == 2
    assert got.optimizer == ("AdamW", "Adam") and got.as_json() == first


def _step_with(key: str, raw: str) -> str:
    """A valid step line whose ``key`` holds the raw JSON text ``raw`` (json.dumps cannot write it)."""
    rec = step_record(2)
    rec[key] = "__RAW__"
    return _line(rec).replace('"__RAW__"', raw)


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        ("peak", "1" + "0" * 309, "bad_value"),  # an integer json accepts and float() cannot take
        ("peak", "1" + "0" * 5000, "bad_json"),  # over Python's int digit limit: json refuses it
        ("peak", "-1", "bad_value"),  # negative bytes
        ("peak", "1.5e3", "bad_value"),  # a byte count must be an integer
        ("peak", "true", "bad_value"),  # bools are not numbers
        ("peak", '"12"', "bad_value"),
        ("time", "NaN", "bad_value"),
        ("time", "Infinity", "bad_value"),
        ("time", "1e309", "bad_value"),  # a float literal that overflows to inf
        ("step_time", "-0.5", "bad_value"),
        ("step", "null", "bad_value"),  # a step record must say which step
        ("device", '"' + "d" * 5000 + '"', "bad_value"),  # bounded strings
        ("categories", "[1,2]", "bad_value"),
        ("categories", '{"parameters": -5}', "bad_value"),
        ("categories", '{"parameters": 5, "newer_category": -5}', "bad_value"),
        ("large_tensors", '[{"name": "w", "bytes": 1e400}]', "bad_value"),
        ("large_tensors", '[{"bytes": 5}]', "bad_value"),
        ("moments", '{"forward_end": {"activations": "x"}}', "bad_value"),
        ("highwater", '{"gradients": -1}', "bad_value"),  # negative bytes
        ("highwater", '{"activations": 1.5}', "bad_value"),
        ("highwater", '{"parameters": true}', "bad_value"),
        ("highwater", "[1,2,3,4]", "bad_value"),
        ("highwater", '{"newer_category": -3}', "bad_value"),  # an extra category is a byte count too
        ("measured_step", "-2", "bad_value"),
        ("model_kinds", '["Linear", 3]', "bad_value"),
        ("model_kinds", '"Linear"', "bad_value"),
        ("optimizer", '["' + "A" * 300 + '"]', "bad_value"),
        ("model_kinds_more", "-1", "bad_value"),
        ("measured_step", '"7"', "bad_value"),
        ("extra", "[" * 100 + "]" * 100, "too_deep"),  # unknown keys are kept but bounded too
        ("categories", "[" * 100_000 + "]" * 100_000, "too_deep"),  # json.loads: RecursionError
        ("schema", "3", "newer_schema"),
        ("schema", '"1"', "bad_value"),
        ("type", '"snapshot"', "unknown_type"),
        ("type", "7", "not_object"),
    ],
)
def test_bad_values_are_skipped_with_their_reason(key: str, raw: str, reason: str) -> None:
    assert _reason(_step_with(key, raw)) == reason


def test_bad_lines_are_skipped_with_their_reason() -> None:
    good = _line(step_record(1))
    assert _reason(good[: len(good) // 2]) == "bad_json"  # truncated
    assert _reason(b"\xff\xfe" + good.encode()) == "bad_json"  # not UTF-8
    assert _reason("[1, 2]") == "not_object"
    assert _reason('{"step": 1}') == "not_object"
    assert _reason(" " * 10) == "blank"
    long = _step_with("extra", '"' + "x" * MAX_LINE + '"')
    assert _reason(long) == "too_long"
    assert _reason(long.encode()) == "too_long"


def test_repeated_large_tensors_are_still_checked() -> None:
    """Entries equal to one seen before are reused; a bool size (True == 1) or a changed size is not."""
    rec = step_record(1)
    first = decode_line(_line(rec))
    assert isinstance(first, StepRecord)
    again = decode_line(_line(rec))
    assert isinstance(again, StepRecord) and again.large_tensors == first.large_tensors
    rec["large_tensors"][0]["bytes"] = True
    assert _reason(_line(rec)) == "bad_value"
    rec["large_tensors"][0]["bytes"] = 7
    changed = decode_line(_line(rec))
    assert isinstance(changed, StepRecord) and changed.large_tensors[0].bytes == 7
    rec["large_tensors"][0]["name"] = ["not", "hashable"]
    assert _reason(_line(rec)) == "bad_value"


def test_long_messages_are_cut_not_refused() -> None:
    rec = decode_line(_line({"type": "warning", "message": "m" * 100_000}))
    assert isinstance(rec, WarningRecord) and len(rec.message) <= 4096 and rec.as_json()["message"] == rec.message


def test_load_run_counts_skips_by_reason(tmp_path: Path) -> None:
    lines = [_line(step_record(s)) for s in range(1, 6)]
    lines[1] = _step_with("peak", "1" + "0" * 309)
    lines[2] = lines[2][:40]
    lines.append(_line({"type": "from_the_future", "schema": 1}))
    (tmp_path / "rank0.jsonl").write_text("\n".join(lines) + "\n")
    data = load_run(tmp_path)
    assert [r.step for r in data.steps()] == [1, 4, 5]
    assert data.skipped == {"bad_value": 1, "bad_json": 1, "unknown_type": 1} and data.bad_lines == 3
    assert any("3 unreadable line(s) skipped" in w and "unknown record type" in w for w in data.warnings)


# ------------------------------------------------------------------------------- meta.json


def _meta(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "schema": 1,
        "run_id": "20260101-000000-x",
        "command": ["python", "train.py", "--lr", "3e-4"],
        "cwd": "/home/me/project",
        "started_at": 1_700_000_000.5,
        "ended_at": None,
        "exit_code": -9,
        "status": "running",
        "devices": [{"index": 0, "name": "NVIDIA H100", "total_bytes": 80 << 30, "kind": "cuda"}],
        "detected_flags": [{"flag": "--lr", "value": "3e-4", "dest": "lr", "kind": "float", "source": "argparse"}],
        "launcher": "memtop train",
    }
    meta.update(changes)
    return meta


def test_meta_decodes_typed_and_keeps_unknown_keys() -> None:
    meta = decode_meta(json.dumps(_meta()))
    assert isinstance(meta, RunMeta)
    assert meta.command == ("python", "train.py", "--lr", "3e-4") and meta.exit_code == -9 and meta.devices[0].total_bytes == 80 << 30
    assert meta.detected_flags is not None and meta.detected_flags[0].flag == "--lr" and meta.detected_flags[0].kind == "float"
    assert meta.as_json()["launcher"] == "memtop train" and not meta.dropped


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cwd", "/" + "a" * 5000),  # ENAMETOOLONG if used as a path
        ("cwd", "/" + "/".join(["b" * 200] * 25)),  # over PATH_MAX in total
        ("cwd", 7),
        ("command", ["python", 3]),
        ("command", ["x" * 5000]),
        ("command", "python train.py"),
        ("started_at", math.inf),
        ("exit_code", 10**400),
        ("devices", [{"total_bytes": -1}]),
        ("detected_flags", "--lr"),
    ],
)
def test_meta_bad_fields_are_dropped_and_the_rest_kept(key: str, value: Any) -> None:
    meta = decode_meta(json.dumps(_meta(**{key: value})))
    assert isinstance(meta, RunMeta)
    assert key in meta.dropped and getattr(meta, key) in (None, ()) and meta.as_json()[key] is None
    assert meta.run_id == "20260101-000000-x" and meta.started_at is not None or key == "started_at"


def test_detected_flags_are_normalized() -> None:
    flags = [{"flag": "--lr", "aliases": 3, "kind": None, "choices": [[1]]}, [[["deep"]]], {"flag": 5}, {"flag": "--bs", "aliases": ["-b", 2]}]
    meta = decode_meta(json.dumps(_meta(detected_flags=flags)))
    assert isinstance(meta, RunMeta) and meta.detected_flags is not None
    assert [(f.flag, f.aliases, f.kind, f.choices) for f in meta.detected_flags] == [("--lr", (), "str", ()), ("--bs", ("-b",), "str", None)]
    assert meta.as_json()["detected_flags"] == flags_to_json(meta.detected_flags)  # what update_meta writes back


def test_unusable_meta_files() -> None:
    assert isinstance(decode_meta("[" * 100_000 + "]" * 100_000), Skip)  # RecursionError caught
    assert isinstance(decode_meta('{"schema": 1'), Skip)
    assert isinstance(decode_meta("[]"), Skip)
    deep = decode_meta(json.dumps({"schema": 1, "run_id": "r", "extra": json.loads("[" * 50 + "]" * 50)}))
    assert isinstance(deep, RunMeta) and "extra" in deep.dropped and "extra" not in deep.as_json()


def test_records_are_read_by_attribute_only() -> None:
    """No dict-style access: a reader that still wrote ``rec.get("peak")`` fails here and in mypy."""
    from memtop.runs.flag_entry import FlagEntry

    for cls in (StepRecord, StageRecord, OomRecord, WarningRecord, ExitRecord, RunMeta, FlagEntry):
        assert not any(hasattr(cls, name) for name in ("get", "__getitem__", "__contains__")), cls
    rec = decode_line(json.dumps(step_record(1)))
    assert isinstance(rec, StepRecord) and rec.as_json()["step"] == 1
