"""``memtop analyze [latest|RUN] [--json]``: the post-mortem report of one run."""

from __future__ import annotations

import argparse

from memtop.analyzers.load import load_for_analysis
from memtop.analyzers.report import build, to_json
from memtop.commands import add_common_options
from memtop.commands._common import find_run, stdout_is_tty, terminal_width, unreadable, write

NAME = "analyze"
HELP = "post-mortem report of a run (peak, breakdown, leaks, OOM, advice)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default="latest", metavar="RUN", help="run id, run directory or `latest` (default)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (keys documented in docs/analyze.md)")
    parser.add_argument("--no-plot", action="store_true", help="leave out the timeline plot")
    parser.add_argument(
        "--no-flag-detection",
        action="store_true",
        help="no effect (kept for old scripts): analyze never runs anything; flags come only from meta.json",
    )
    add_common_options(parser)


def run(args: argparse.Namespace) -> int:
    path = find_run(args.run, args)
    data, series = load_for_analysis(path)
    report = build(data, series, detect_flags=not args.no_flag_detection)
    if report.empty:
        raise unreadable(path, report.warnings)
    if args.json:
        from memtop.render.json import dumps

        write(dumps(to_json(report)))
    else:
        from memtop.render.text import render

        tty = stdout_is_tty()
        write(render(report, width=terminal_width(), plot=not args.no_plot, color=tty))
    return 0
