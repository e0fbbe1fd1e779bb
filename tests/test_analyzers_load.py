"""The analysis loader (exact figures from a cheap scan, a decoded sample of long runs) and a fuzz of
the record readers: whatever the bytes, nothing raises."""

from __future__ import annotations

import json
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runfactory import GiB, MiB, make_run, step_record

from memtop.analyzers.advice import suggest
from memtop.analyzers.load import load_for_analysis
from memtop.analyzers.report import build, to_json
from memtop.analyzers.series import rank_series
from memtop.analyzers.summary import find_peak
from memtop.render.json import dumps
from memtop.render.text import render
from memtop.runs.format import rank_file_name
from memtop.runs.reader import load_run, parse_line


def test_small_run_is_decoded_whole(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=40)
    data, series = load_for_analysis(run)
    assert not series[0].sampled and len(series[0].steps) == 40 == series[0].total_steps
    full = rank_series(load_run(run))
    assert series[0].levels() == full[0].levels()


def test_long_run_is_sampled_but_the_peak_is_exact(tmp_path: Path) -> None:
    rng = random.Random(3)
    spike = 3777
    levels = {s: rng.randint(0, 400) * MiB for s in range(1, 6001)}
    run = make_run(tmp_path, steps=6000, per_step=lambda s, r: {"activations": 6 * GiB + levels[s] + (2 * GiB if s == spike else 0), "fragmentation": 100 * MiB if s % 7 else 3 * GiB})
    data, series = load_for_analysis(run, limit=500)
    s = series[0]
    assert s.sampled and s.total_steps == 6000 and len(s.steps) < 520
    peak = find_peak(series)
    full_peak = find_peak(rank_series(load_run(run)))
    assert peak is not None and full_peak is not None
    assert (peak.step, peak.bytes) == (full_peak.step, full_peak.bytes) == (spike, full_peak.bytes)
    rep = to_json(build(data, series, detect_flags=False))
    assert rep["run"]["steps"] == 6000 and rep["run"]["sampled"] is True
    assert any("long run" in w for w in rep["warnings"])


def test_compact_and_spaced_json_and_other_record_types(tmp_path: Path) -> None:
    run = tmp_path / "20261122-120000-mixed"
    run.mkdir()
    lines = []
    for s in range(1, 3001):
        rec = step_record(s, activations=GiB + (GiB if s == 1234 else 0))
        lines.append(json.dumps(rec, separators=(",", ":")) if s % 2 else json.dumps(rec))
        if s % 500 == 0:
            lines.append(json.dumps({"type": "stage", "schema": 1, "rank": 0, "time": 1.0, "name": "load", "step": s, "duration": 0.1, "before": 1, "after": 2, "peak": 3, "measure": "rss"}))
    lines.insert(10, "garbage")
    (run / rank_file_name(0)).write_text("\n".join(lines) + '\n{"type":"step","step":3001,"pe')
    data, series = load_for_analysis(run, limit=200)
    peak = find_peak(series)
    assert peak is not None and peak.step == 1234
    assert series[0].total_steps == 3001  # the truncated last line is counted as a step line…
    assert data.bad_lines >= 2  # …but not decoded: it and the garbage line are reported
    assert len(list(data.of_type("stage"))) == 6


def test_keys_in_unusual_places_fall_back_to_decoding(tmp_path: Path) -> None:
    run = tmp_path / "20261122-120000-odd"
    run.mkdir()
    recs = []
    for s in range(1, 301):
        rec = step_record(s, activations=GiB + s * MiB)
        rec = {"type": "step", "nested": {"peak": 1}, **{k: v for k, v in rec.items() if k != "type"}}
        recs.append(json.dumps(rec))
    (run / rank_file_name(0)).write_text("\n".join(recs) + "\n")
    data, series = load_for_analysis(run, limit=50)
    peak = find_peak(series)
    assert peak is not None and peak.step == 300


# --- fuzz ------------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(["type", "step", "peak", "tracked", "reserved", "allocated", "categories", "large_tensors", "device_total", "device_used", "step_time", "fragmentation_pct", "name", "requested_bytes", "message", "rank", "time"])
_records = st.dictionaries(_keys, _json_values | st.sampled_from(["step", "oom", "stage", "exit"]), max_size=10)
_lines = st.one_of(
    _records.map(lambda r: json.dumps(r, allow_nan=True)),
    _records.map(lambda r: json.dumps({"type": "step", **r}, allow_nan=True)),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    st.text(max_size=40),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(_lines, max_size=12), st.booleans())
def test_fuzz_readers_and_report_never_raise(tmp_path: Path, lines: list[str], cut: bool) -> None:
    run = tmp_path / "fuzz"
    run.mkdir(exist_ok=True)
    text = "\n".join(lines)
    if cut and text:
        text = text[: len(text) // 2]
    (run / rank_file_name(0)).write_text(text, encoding="utf-8", errors="surrogateescape")
    for line in lines:
        rec = parse_line(line)
        assert rec is None or isinstance(rec.type, str)
    full = load_run(run)
    data, series = load_for_analysis(run, limit=3)
    for d, s in ((full, None), (data, series)):
        rep = build(d, s, detect_flags=False)
        dumps(to_json(rep))
        render(rep, plot=False)
    suggest(full, detect_flags=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_fuzz_raw_bytes(tmp_path: Path, raw: bytes) -> None:
    run = tmp_path / "raw"
    run.mkdir(exist_ok=True)
    (run / rank_file_name(0)).write_bytes(raw)
    (run / "meta.json").write_bytes(raw[:50])
    data, series = load_for_analysis(run)
    build(data, series, detect_flags=False)
    build(load_run(run), None, detect_flags=False)
