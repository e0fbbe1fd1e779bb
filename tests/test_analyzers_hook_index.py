"""analyze reads a long run through the step index the hook writes (rank<N>.jsonl.idx): the
same report as a scan of every line, nothing written into the run directory, and an index that
does not check out (torn, garbage, stale) ignored; a crashed run's uncovered tail is scanned."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from longrun import write_hook_run

from memtop.analyzers import hook_index
from memtop.analyzers.load import load_for_analysis
from memtop.analyzers.report import build, to_json
from memtop.analyzers.scan_index import INDEX_FILE
from memtop.render.json import dumps
from memtop.runs.recordfiles import record_files

STEPS = 10_000  # long enough for the index's sampling grid (16 x 600 step lines)


def _report(run: Path, use_index: bool = True) -> str:
    data, series = load_for_analysis(run, save_index=False, use_index=use_index)
    return dumps(to_json(build(data, series, detect_flags=False)))


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hook_run(tmp_path_factory.mktemp("long"), STEPS)


def test_the_hook_writes_an_index_no_reader_takes_for_a_record_file(long_run: Path) -> None:
    index = long_run / "rank0.jsonl.idx"
    chunks = [json.loads(ln) for ln in index.read_text().splitlines()]
    assert [c["steps"] for c in chunks] == [4096, 4096, STEPS - 8192]  # the last one written at close
    assert chunks[-1]["end"] == (long_run / "rank0.jsonl").stat().st_size
    assert list(record_files(long_run).values()) == [long_run / "rank0.jsonl"]


def test_analysis_through_the_index_equals_a_scan_and_writes_nothing(long_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sorted(p.name for p in long_run.iterdir())
    scanned = _report(long_run, use_index=False)
    used: list[int] = []
    real = hook_index.read_hook_index

    def spy(*args: object) -> list[hook_index.Chunk]:
        got = real(*args)  # type: ignore[arg-type]
        used.append(len(got))
        return got

    monkeypatch.setattr("memtop.analyzers.load.read_hook_index", spy)
    data, series = load_for_analysis(long_run)  # save_index=True, as `memtop analyze` calls it
    assert used == [3]
    assert dumps(to_json(build(data, series, detect_flags=False))) == scanned
    assert series[0].total_steps == STEPS
    assert sorted(p.name for p in long_run.iterdir()) == before  # no analysis-index.json
    assert not (long_run / INDEX_FILE).exists()


def test_the_peak_and_counts_are_exact(long_run: Path) -> None:
    data, series = load_for_analysis(long_run, save_index=False)
    s = series[0]
    peak_step = max(data.steps(0), key=lambda r: r.level).step
    assert peak_step == STEPS * 2 // 3  # the spike
    assert s.total_steps == STEPS and s.sampled
    assert s.cache_releases == STEPS // 5000


def _chunks(run: Path) -> list[hook_index.Chunk]:
    path = run / "rank0.jsonl"
    data = path.read_bytes()
    return hook_index.read_hook_index(path, data, len(data))


@pytest.mark.parametrize(
    ("damage", "kept"),
    [
        (lambda b: b[: b.rindex(b"\n", 0, len(b) - 1) + 40], 2),  # torn: the hook died while writing its last line
        (lambda b: b"garbage\n" + b, 0),
        (lambda b: b.replace(b'"start":0,', b'"start":1,', 1), 0),
        (lambda b: b.replace(b'"marks":[0,', b'"marks":[5,', 1), 3),  # read, then refused when the mark is used
        (lambda b: b.replace(b'"level_at":[', b'"level_at":[1', 1), 0),
        (lambda b: b.replace(b'"steps":4096', b'"steps":4097', 1), 0),
        (lambda b: b"\x00" * len(b), 0),
        (lambda b: b"", 0),
    ],
)
def test_an_index_that_does_not_check_out_is_ignored(long_run: Path, tmp_path: Path, damage: Callable[[bytes], bytes], kept: int) -> None:
    run = tmp_path / long_run.name
    run.mkdir()
    for p in long_run.iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    index = run / "rank0.jsonl.idx"
    index.write_bytes(damage(index.read_bytes()))
    assert len(_chunks(run)) == kept
    assert _report(run) == _report(run, use_index=False)


def test_an_index_whose_figures_are_not_the_lines_own_is_dropped(long_run: Path, tmp_path: Path) -> None:
    run = tmp_path / long_run.name
    run.mkdir()
    for p in long_run.iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    index = run / "rank0.jsonl.idx"
    docs = [json.loads(ln) for ln in index.read_text().splitlines()]
    docs[0]["level"] += 1  # consistent ranges, a wrong figure: found when its line is decoded
    index.write_text("".join(json.dumps(d) + "\n" for d in docs))
    assert len(_chunks(run)) == 3
    assert _report(run) == _report(run, use_index=False)


def test_a_stale_index_of_another_file_is_ignored(long_run: Path, tmp_path: Path) -> None:
    other = write_hook_run(tmp_path, STEPS + 3, name="20261122-130000-other")
    (other / "rank0.jsonl.idx").write_bytes((long_run / "rank0.jsonl.idx").read_bytes())
    assert _chunks(other) == []
    assert _report(other) == _report(other, use_index=False)


def test_a_crashed_run_scans_what_the_index_does_not_cover(tmp_path: Path) -> None:
    run = write_hook_run(tmp_path, STEPS, close=False)  # no exit record, the last stretch not indexed
    path = run / "rank0.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"type":"step","schema":2,"base":99')  # the step in flight, cut off
    chunks = [json.loads(ln) for ln in (run / "rank0.jsonl.idx").read_text().splitlines()]
    assert sum(c["steps"] for c in chunks) == 8192
    assert _report(run) == _report(run, use_index=False)
    data, series = load_for_analysis(run, save_index=False)
    assert series[0].total_steps == STEPS + 1  # the cut line counts as a step line, as a scan counts it
    assert max(data.steps(0), key=lambda r: r.level).step == STEPS * 2 // 3


def test_a_run_without_the_hook_index_is_still_analyzed_and_indexed_as_before(tmp_path: Path) -> None:
    run = write_hook_run(tmp_path, STEPS, index=False)
    assert not (run / "rank0.jsonl.idx").exists()
    assert _report(run) == _report(run, use_index=False)


def test_the_index_is_not_followed_into_another_file(long_run: Path) -> None:
    assert os.path.basename(hook_index.index_path(long_run / "proc12.jsonl")) == "proc12.jsonl.idx"


def test_the_end_of_run_scan_is_skipped_for_a_file_with_the_hook_index(long_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memtop.analyzers import load as load_mod

    monkeypatch.setattr(load_mod, "MIN_INDEXED_BYTES", 1)
    assert not load_mod.index_long_run(long_run)
    assert not (long_run / INDEX_FILE).exists()


def test_a_run_still_being_written_uses_the_stretches_its_bytes_hold(long_run: Path, tmp_path: Path) -> None:
    run = tmp_path / long_run.name
    run.mkdir()
    for p in long_run.iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    data = (run / "rank0.jsonl").read_bytes()
    chunks = [json.loads(ln) for ln in (run / "rank0.jsonl.idx").read_text().splitlines()]
    cut = chunks[1]["end"] + 5000  # the reader mapped the file before the writer's last lines
    (run / "rank0.jsonl").write_bytes(data[: data.index(b"\n", cut) + 1])
    assert len(_chunks(run)) == 2
    assert _report(run) == _report(run, use_index=False)


def test_the_cli_reads_the_index_and_leaves_the_run_directory_as_it_was(long_run: Path) -> None:
    from clikit import memtop

    before = sorted(p.name for p in long_run.iterdir())
    proc = memtop("analyze", str(long_run), "--json", env={"MEMTOP_NO_FLAG_DETECTION": "1"})
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["run"]["steps"] == STEPS and rep["run"]["sampled"]
    assert sorted(p.name for p in long_run.iterdir()) == before
