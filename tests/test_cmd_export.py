"""`memtop export`: CSV rows, and TensorBoard events read back with TensorBoard's own reader."""

from __future__ import annotations

import csv
from pathlib import Path

from clikit import assert_one_line_error, memtop
from runfactory import GiB, make_run

from memtop.runs import format as fmt


def test_csv(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=6, ranks=2)
    out = tmp_path / "out.csv"
    proc = memtop("export", str(run), "--csv", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12
    assert rows[0]["rank"] == "0" and rows[0]["step"] == "1" and rows[6]["rank"] == "1"
    assert int(rows[0]["activations"]) == 6 * GiB
    assert rows[0]["large_tensor_count"] == "3"
    stdout = memtop("export", str(run), "--csv", "-").stdout
    assert stdout.splitlines()[0].startswith("rank,step,time")


def test_cpu_nulls_are_empty_cells(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=2, device="cpu")
    rows = list(csv.DictReader(memtop("export", str(run), "--csv", "-").stdout.splitlines()))
    assert rows[0]["peak"] == "" and rows[0]["other"] == "" and rows[0]["tracked"] == str(14 * GiB)


def test_tensorboard_readable_by_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = make_run(tmp_path, steps=5, ranks=2)
    target = tmp_path / "tb"
    proc = memtop("export", str(run), "--tensorboard", str(target))
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        acc = EventAccumulator(str(target / f"rank{rank}"))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        expected = {fmt.tb_category_tag(c) for c in fmt.CATEGORIES} | {fmt.TB_ALLOCATED, fmt.TB_RESERVED, fmt.TB_PEAK, fmt.TB_FRAGMENTATION, fmt.TB_LARGE_COUNT}
        assert tags == expected
        acts = acc.Scalars(fmt.tb_category_tag("activations"))
        assert [e.step for e in acts] == [1, 2, 3, 4, 5]
        assert acts[0].value == 6 * 1024
        assert acc.Scalars(fmt.TB_LARGE_COUNT)[0].value == 3


def test_bad_input(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=2)
    assert_one_line_error(memtop("export", str(run)), 2, "--tensorboard DIR and/or --csv FILE")
    assert_one_line_error(memtop("export", "nope", "--csv", "-", "--runs-dir", str(tmp_path)), 2, "no run")
    assert_one_line_error(memtop("export", str(run), "--csv", str(tmp_path / "no" / "dir" / "x.csv")), 2, "cannot write")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(memtop("export", str(run), "--tensorboard", str(tmp_path / "file")), 2, "not a directory")
