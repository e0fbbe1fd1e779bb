"""``memtop compare RUN_A RUN_B``: before/after per category, peak, fragmentation, step time."""

from __future__ import annotations

import argparse

from memtop.analyzers.cmdline import join
from memtop.analyzers.compare import Row, compare, to_json
from memtop.analyzers.load import load_for_analysis
from memtop.commands import add_common_options
from memtop.commands._common import find_run, unreadable, write
from memtop.units import fmt_bytes, fmt_pct

NAME = "compare"
HELP = "compare two runs category by category"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", metavar="RUN_A", help="the run before (id, directory or `latest`)")
    parser.add_argument("run_b", metavar="RUN_B", help="the run after")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    add_common_options(parser)


def _fmt(r: Row, v: float | None, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    if r.unit == "bytes":
        return fmt_bytes(v, signed=signed)
    if r.unit == "percent":
        return f"{v:+.1f} pts" if signed else fmt_pct(v)
    if r.unit == "seconds":
        return f"{v * 1000:+.0f} ms" if signed else f"{v * 1000:.0f} ms"
    return f"{v:+.0f}" if signed else f"{v:.0f}"


def run(args: argparse.Namespace) -> int:
    path_a = find_run(args.run_a, args)
    path_b = find_run(args.run_b, args)
    data_a, series_a = load_for_analysis(path_a)
    data_b, series_b = load_for_analysis(path_b)
    for path, data, series in ((path_a, data_a, series_a), (path_b, data_b, series_b)):
        if not series:
            raise unreadable(path, data.warnings or ["no step records"])
    result = compare(data_a, series_a, data_b, series_b)
    if args.json:
        from memtop.render.json import dumps

        write(dumps(to_json(result)))
        return 0
    from memtop.render.text import table

    lines = [
        f"A  {result.a.run_id}  {join(result.a.command)}",
        f"B  {result.b.run_id}  {join(result.b.command)}",
        "",
    ]
    rows = [[r.name, _fmt(r, r.a), _fmt(r, r.b), _fmt(r, r.diff, signed=True), fmt_pct(r.diff_pct, signed=True) if r.diff_pct is not None else r.note] for r in result.rows]
    lines += table(["", "A", "B", "B − A", "%"], rows, indent=0)
    lines += [f"note: {n}" for n in result.notes]
    for w in (*data_a.warnings, *data_b.warnings):
        lines.append(f"warning: {w}")
    write("\n".join(lines) + "\n")
    return 0
