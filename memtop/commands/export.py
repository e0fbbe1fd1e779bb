"""``memtop export RUN --tensorboard DIR`` / ``--csv FILE``: a run's step series for other tools."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from memtop.analyzers.export import CSV_COLUMNS, csv_rows, tensorboard_points
from memtop.commands import add_common_options
from memtop.commands._common import find_run, unreadable, write
from memtop.errors import MemtopError
from memtop.runs.reader import RunData, load_run
from memtop.runs.recordfiles import file_stem

NAME = "export"
HELP = "export a run to TensorBoard or CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run id, run directory or `latest`")
    parser.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files under DIR/rank<N>/")
    parser.add_argument("--csv", metavar="FILE", help="write one row per step and rank to FILE (`-` for stdout)")
    add_common_options(parser)


def export_csv(data: RunData, target: str) -> int:
    rows = 0
    try:
        fh = sys.stdout if target == "-" else open(target, "w", newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise MemtopError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for row in csv_rows(data):
            w.writerow(row)
            rows += 1
    finally:
        if fh is not sys.stdout:
            fh.close()
    return rows


def export_tensorboard(data: RunData, target: Path) -> int:
    """Event files readable by TensorBoard (no torch needed): one writer per record file
    (``rank<N>/``, ``proc<pid>/``)."""
    try:
        from memtop.runs.tensorboard import EventWriter
    except ImportError as exc:
        raise MemtopError(f"TensorBoard export needs the tensorboard package ({exc})", 1) from exc
    writers: dict[int, EventWriter] = {}
    points = 0
    try:
        for rank, step, wall, scalars in tensorboard_points(data):
            w = writers.get(rank)
            if w is None:
                d = target / file_stem(rank)
                try:
                    w = writers[rank] = EventWriter(d)
                except OSError as exc:
                    raise MemtopError(f"cannot create {d}: {exc.strerror or exc}") from exc
            w.add_scalars(step, wall, scalars)
            points += len(scalars)
    finally:
        for w in writers.values():
            w.close()
    return points


def run(args: argparse.Namespace) -> int:
    if not args.tensorboard and not args.csv:
        raise MemtopError("say where to export: --tensorboard DIR and/or --csv FILE")
    path = find_run(args.run, args)
    data = load_run(path)
    if not data.steps():
        raise unreadable(path, data.warnings or ["no step records"])
    for w in data.warnings:
        sys.stderr.write(f"memtop: warning: {w}\n")
    if args.csv:
        n = export_csv(data, args.csv)
        if args.csv != "-":
            write(f"wrote {n} rows to {args.csv}\n")
    if args.tensorboard:
        target = Path(args.tensorboard)
        if target.exists() and not target.is_dir():
            raise MemtopError(f"{target} exists and is not a directory")
        n = export_tensorboard(data, target)
        write(f"wrote {n} scalars to {target} (view: tensorboard --logdir {target})\n")
    return 0
