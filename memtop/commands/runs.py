"""``memtop runs``: the runs, newest first, with name, command, status and peak."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from memtop.analyzers.cmdline import join
from memtop.analyzers.load import load_for_analysis
from memtop.analyzers.summary import find_peak, run_info
from memtop.commands import add_common_options
from memtop.commands._common import runs_dir, stdout_is_tty, terminal_width, write
from memtop.errors import MemtopError
from memtop.runs.rundir import check_listable, scan_runs
from memtop.runs.safeio import is_dir
from memtop.units import fmt_bytes

NAME = "runs"
HELP = "list runs, newest first"

# Enough decoded steps to find each run's peak exactly (the scan sees every line).
_PEAK_SAMPLE = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.add_argument("-n", "--limit", type=int, default=None, metavar="N", help="show the N newest runs")
    add_common_options(parser)


def _name(run_id: str) -> str:
    parts = run_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() else run_id


def run(args: argparse.Namespace) -> int:
    root = runs_dir(args)
    if not is_dir(root):
        raise MemtopError(f"no runs directory at {root} (run `memtop train` first, or pass --runs-dir)")
    if args.limit is not None and args.limit < 1:
        raise MemtopError("--limit must be at least 1")
    check_listable(root)
    found, notes = scan_runs(root)
    for note in notes:  # an unreadable directory, a symlink loop: one line each, the rest is listed
        sys.stderr.write(f"memtop: note: {note}\n")
    paths = found[: args.limit]
    rows: list[dict[str, Any]] = []
    for path in paths:
        data, series = load_for_analysis(path, limit=_PEAK_SAMPLE)
        info = run_info(data, series)
        peak = find_peak(series)
        rows.append(
            {
                "id": info.run_id,
                "name": _name(info.run_id),
                "path": str(path),
                "started_at": info.started_at,
                "status": info.status,
                "exit_code": info.exit_code,
                "steps": info.steps,
                "device_kind": info.device_kind,
                "peak_bytes": peak.bytes if peak else None,
                "peak_measure": peak.measure if peak else None,
                "command": info.command,
            }
        )
    if args.json:
        from memtop.render.json import dumps

        write(dumps({"runs_dir": str(root), "runs": rows}))
        return 0
    if not rows:
        write(f"no runs in {root}\n")
        return 0
    from memtop.render.text import table

    body = []
    for r in rows:
        shown = fmt_bytes(r["peak_bytes"]) + ("*" if r["peak_measure"] == "tracked" else "") if r["peak_bytes"] is not None else "-"
        body.append([r["id"], r["name"], r["status"], str(r["steps"]), shown, join(r["command"])])
    lines = table(["run", "name", "status", "steps", "peak", "command"], body, "llllrl", indent=0)
    if stdout_is_tty():  # cut long commands at the terminal's edge; pipes get whole lines
        width = terminal_width()
        lines = [line if len(line) <= width else line[: width - 1] + "…" for line in lines]
    note = "\n* tracked bytes (CPU run: no allocator peak)\n" if any(r["peak_measure"] == "tracked" for r in rows) else "\n"
    write("\n".join(lines) + note)
    return 0
