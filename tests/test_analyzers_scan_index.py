"""The saved scan of long rank files (analysis-index.json): reading through it gives exactly what a
scan gives, and an index that does not match the file as it is now is never used."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from runfactory import GiB, MiB, make_run

from memtop.analyzers import load as load_mod
from memtop.analyzers.load import load_for_analysis
from memtop.analyzers.report import build, to_json
from memtop.analyzers.scan_index import INDEX_FILE
from memtop.analyzers.series import RankSeries, rank_series
from memtop.render.json import dumps
from memtop.runs.reader import RunData, load_run

SPIKE = 613


@pytest.fixture(autouse=True)
def _index_every_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_mod, "MIN_INDEXED_BYTES", 0)


def _per_step(seed: int) -> Any:
    rng = random.Random(seed)
    levels = {s: rng.randint(0, 400) * MiB for s in range(1, 5001)}
    return lambda s, r: {"activations": 6 * GiB + levels[s] + (2 * GiB if s == SPIKE else 0), "fragmentation": 100 * MiB if s % 7 else 3 * GiB}


def _extras() -> list[dict[str, Any]]:
    return [
        {"type": "warning", "rank": 0, "time": 1.0, "message": "hook warning"},
        {"type": "oom", "rank": 0, "time": 2.0, "message": "CUDA out of memory", "requested": 2 * GiB},
        {"type": "exit", "rank": 0, "time": 3.0, "exit_code": 1},
    ]


def _mangle(path: Path, seed: int) -> None:
    """Malformed lines in the middle: a truncated step, garbage, a wrong type, a blank line."""
    lines = path.read_bytes().split(b"\n")
    rng = random.Random(seed)
    for k in sorted(rng.sample(range(10, len(lines) - 10), 6), reverse=True):
        lines.insert(k, rng.choice([lines[k][: len(lines[k]) // 2], b"{not json", b'{"type":"step","step":"x"}', b"", b"[1,2]"]))
    path.write_bytes(b"\n".join(lines))


def _same(a: tuple[RunData, dict[int, RankSeries]], b: tuple[RunData, dict[int, RankSeries]]) -> None:
    (ra, sa), (rb, sb) = a, b
    assert ra.records == rb.records
    assert ra.skipped == rb.skipped and ra.warnings == rb.warnings
    assert sa.keys() == sb.keys()
    for k in sa:
        x, y = sa[k], sb[k]
        assert (x.steps, x.levels(), x.reserved, x.sampled, x.total_steps, x.cache_releases) == (y.steps, y.levels(), y.reserved, y.sampled, y.total_steps, y.cache_releases)
    assert dumps(to_json(build(ra, sa, detect_flags=False))) == dumps(to_json(build(rb, sb, detect_flags=False)))


def _no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def scan(*_: object) -> None:
        raise AssertionError("scanned although the index matches")

    monkeypatch.setattr(load_mod, "_load_rank", scan)


@pytest.mark.parametrize("device", ["cuda:0", "cpu"])
def test_index_read_equals_scan_and_full_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    run = make_run(tmp_path, steps=2000, device=device, per_step=_per_step(1), extra_records=_extras(), exit_code=1, status="failed")
    _mangle(run / "rank0.jsonl", 2)
    scanned = load_for_analysis(run, limit=100)
    assert (run / INDEX_FILE).is_file()
    s = scanned[1][0]
    assert s.sampled and 2000 <= s.total_steps <= 2006  # a truncated step line counts as a step line
    # the peak step and its value are exact: the same as decoding every record
    full = rank_series(load_run(run))[0]
    top = max(range(len(full.steps)), key=full.level)
    assert full.steps[top] == SPIKE
    assert max(s.levels()) == full.level(top) and s.steps[s.levels().index(max(s.levels()))] == SPIKE
    assert s.has_allocator == (device != "cpu")
    assert scanned[0].skipped  # the malformed lines that were decoded are counted
    with monkeypatch.context() as m:
        _no_scan(m)
        indexed = load_for_analysis(run, limit=100)
    _same(scanned, indexed)


def test_index_is_not_used_once_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, steps=800, per_step=_per_step(3))
    load_for_analysis(run, limit=50)
    rank = run / "rank0.jsonl"
    line = json.loads(rank.read_bytes().split(b"\n")[5])
    line["step"], line["peak"] = 801, 99 * GiB
    with open(rank, "a", encoding="utf-8") as fh:  # the run goes on: a new peak at the end
        fh.write(json.dumps(line) + "\n")
    got = load_for_analysis(run, limit=50)
    assert max(got[1][0].levels()) == 99 * GiB and got[1][0].total_steps == 801
    # same size, other bytes, other mtime: scanned again
    data = bytearray(rank.read_bytes())
    data[data.index(b'"step": 1,') + 9] = ord(" ")
    rank.write_bytes(bytes(data))
    st = rank.stat()
    os.utime(rank, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_for_analysis(run, limit=50)[1][0].total_steps == 801
    # and a limit the index was not made for is scanned too
    _same(load_for_analysis(run, limit=60), load_for_analysis(run, limit=60, save_index=False, use_index=False))


@pytest.mark.parametrize(
    "index",
    [
        b"{not json",
        b'{"version": 1, "files": {"rank0.jsonl": [{"size": -1}]}}',
        b'{"version": 99, "files": {}}',
        b"[" * 100_000,
    ],
)
def test_a_bad_index_is_ignored(tmp_path: Path, index: bytes) -> None:
    run = make_run(tmp_path, steps=700, per_step=_per_step(4))
    expected = load_for_analysis(run, limit=50, save_index=False, use_index=False)
    (run / INDEX_FILE).write_bytes(index)
    _same(load_for_analysis(run, limit=50), expected)


@pytest.mark.parametrize("forge", ["off_line_start", "same_line_twice"])
def test_an_index_pointing_off_line_starts_or_repeating_lines_is_ignored(tmp_path: Path, forge: str) -> None:
    run = make_run(tmp_path, steps=700, per_step=_per_step(5))
    expected = load_for_analysis(run, limit=50)
    doc = json.loads((run / INDEX_FILE).read_text())
    entry = doc["files"]["rank0.jsonl"][0]
    if forge == "off_line_start":
        entry["steps"] = [[s + 3, e] for s, e in entry["steps"]]
    else:  # one line listed many times: decoding it would cost more than a scan
        entry["steps"] = [entry["steps"][0]] * 5000
    (run / INDEX_FILE).write_text(json.dumps(doc))
    _same(load_for_analysis(run, limit=50), expected)


def test_small_files_get_no_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_mod, "MIN_INDEXED_BYTES", 64 * MiB)
    run = make_run(tmp_path, steps=700)
    load_for_analysis(run, limit=50)
    assert not (run / INDEX_FILE).exists()


def test_a_read_only_run_dir_is_scanned_each_time(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=700, per_step=_per_step(6))
    run.chmod(0o555)
    try:
        a = load_for_analysis(run, limit=50)
        if not os.access(run, os.W_OK):  # root writes anyway
            assert not (run / INDEX_FILE).exists()
        _same(a, load_for_analysis(run, limit=50, save_index=False, use_index=False))
    finally:
        run.chmod(0o755)


def test_index_long_run_saves_the_scan_of_long_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, steps=700, per_step=_per_step(7))
    monkeypatch.setattr(load_mod, "MIN_INDEXED_BYTES", 64 * MiB)
    assert not load_mod.index_long_run(run) and not (run / INDEX_FILE).exists()
    monkeypatch.setattr(load_mod, "MIN_INDEXED_BYTES", 0)
    assert load_mod.index_long_run(run) and (run / INDEX_FILE).is_file()
    assert not load_mod.index_long_run(tmp_path / "missing")
    with monkeypatch.context() as m:
        _no_scan(m)
        indexed = load_for_analysis(run)
    _same(indexed, load_for_analysis(run, save_index=False, use_index=False))


def test_each_sample_size_keeps_its_own_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`memtop runs` (8 lines) and `memtop analyze` (600) on one run do not overwrite each other."""
    run = make_run(tmp_path, steps=900, per_step=_per_step(8))
    a, b = load_for_analysis(run, limit=8), load_for_analysis(run, limit=50)
    with monkeypatch.context() as m:
        _no_scan(m)
        _same(load_for_analysis(run, limit=8), a)
        _same(load_for_analysis(run, limit=50), b)
