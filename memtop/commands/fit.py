"""`memtop fit`: probe runs at several values of a scaling flag, the peak fitted per category, and
the largest value that fits this device and common cards, with and without the advisor's savings.

Probes run one at a time (on a CPU there is nothing to gain from running them side by side, and
on a GPU two probes would measure each other's memory), each for ``--steps`` optimizer steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from memtop.commands import add_common_options
from memtop.errors import MemtopError

NAME = "fit"
HELP = "capacity planning: the largest batch/frames/resolution that fits, from a few short probe runs"

_VALUE_OPTIONS = {"--runs-dir", "--name", "--vary", "--steps", "--at", "--device-memory"}


def split_child_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[own options] -- CMD ...`` or ``[own options] script.py ARGS`` -> (own, child)."""
    from memtop.commands.train import _normalize_child

    if "--" in argv:
        i = argv.index("--")
        return argv[:i], _normalize_child(argv[i + 1 :])
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            i += 2 if arg.split("=", 1)[0] in _VALUE_OPTIONS and "=" not in arg else 1
            continue
        return argv[:i], _normalize_child(argv[i:])
    return argv, []


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "memtop fit [--vary NAME=V1,V2,V3] [--steps N] [--at V ...] [--device-memory SIZE] [--json] (-- CMD ARGS... | script.py ARGS...)"
    add_common_options(parser)
    parser.add_argument("--vary", action="append", default=[], metavar="NAME=V1,V2,...",
                        help="the flag to vary (without its dashes) and the values to probe; default: a scaling flag found in the script, at a quarter, half and all of its current value")
    parser.add_argument("--steps", type=_positive_int, default=3, help="optimizer steps per probe (default 3)")
    parser.add_argument("--at", action="append", default=[], metavar="V", help="predict the peak at this value (repeat, or V1,V2)")
    from memtop.commands._device_memory import size_arg

    parser.add_argument("--device-memory", type=size_arg, default=None, metavar="SIZE",
                        help="plan for this much memory (e.g. 24GB) instead of this device's")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object (keys: docs/fit.md)")
    parser.add_argument("--name", default=None, help="prefix of the probe runs' names (default: fit-<flag>)")
    parser.add_argument("--no-savings", action="store_true", help="skip the probes that measure the advisor's savings")


def _numbers(text: str, what: str) -> list[float]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise MemtopError(f"{what}: {part!r} is not a number") from None
        if not v > 0 or v == float("inf"):
            raise MemtopError(f"{what}: values must be positive, got {part}")
        out.append(v)
    if not out:
        raise MemtopError(f"{what}: no values given")
    return out


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


class Progress:
    """Which probe, its step, time left: one rewritten line on a terminal, a plain line per probe otherwise."""

    def __init__(self, total: int, steps: int, live: bool) -> None:
        self.total = total
        self.steps = steps
        self.live = live
        self.durations: list[float] = []
        self._last = 0.0

    def _left(self, index: int, elapsed: float) -> str:
        if not self.durations:
            return "time left: measuring the first probe"
        avg = sum(self.durations) / len(self.durations)
        left = max(0.0, avg - elapsed) + avg * (self.total - index)
        return f"≈{left:.0f} s left"

    def update(self, index: int, label: str, step: int, elapsed: float) -> None:
        if not self.live or time.monotonic() - self._last < 0.2:
            return
        self._last = time.monotonic()
        sys.stderr.write(f"\r\x1b[2K[memtop fit] probe {index}/{self.total} {label}: step {step}/{self.steps}, {elapsed:.0f} s, {self._left(index, elapsed)}")
        sys.stderr.flush()

    def done(self, index: int, text: str, duration: float) -> None:
        self.durations.append(duration)
        prefix = "\r\x1b[2K" if self.live else ""
        sys.stderr.write(f"{prefix}[memtop fit] probe {index}/{self.total} {text} ({duration:.1f} s; {self._left(index, 0.0)})\n")
        sys.stderr.flush()


def _probe_text(p: Any) -> str:
    from memtop.units import fmt_bytes

    if p.usable:
        return f"{p.spec.label}: peak {fmt_bytes(p.peak_bytes)} ({'tracked' if p.measure == 'tracked' else 'allocator'}), run {p.run_dir.name if p.run_dir else '?'}"
    return f"{p.spec.label}: {p.status}" + (f" ({p.message})" if p.message else "")


def run(args: argparse.Namespace) -> int:
    from memtop.analyzers.cmdline import set_value, split_command
    from memtop.analyzers.flags import detect_flags
    from memtop.commands._common import runs_dir as resolve_runs_dir
    from memtop.fitting import capacity, report, scaling
    from memtop.fitting.probes import ProbeResult, ProbeSpec, run_probe
    from memtop.launcher import check_command
    from memtop.runs.rundir import read_meta, sanitize_name

    child: list[str] = list(getattr(args, "child", []) or [])
    check_command(child)
    if len(args.vary) > 1:
        raise MemtopError("one --vary at a time: a fit varies one flag (run `memtop fit` once per flag)")
    cwd = Path.cwd()
    vary: tuple[str, list[float]] | None = None
    if args.vary:
        name, eq, raw = args.vary[0].partition("=")
        name = name.strip().lstrip("-")
        if not eq or not name:
            raise MemtopError(f"--vary takes NAME=V1,V2,...: got {args.vary[0]!r}")
        vary = (name, _numbers(raw, f"--vary {name}"))
        if len(set(vary[1])) < 2:
            raise MemtopError("a fit needs at least two different values: e.g. --vary batch-size=1,2,4")
    at: list[float] = []
    for text in args.at:
        at.extend(_numbers(text, "--at"))
    entries = detect_flags(child, cwd)
    notes: list[str] = []

    role: str | None
    if vary is not None:
        name, values = vary
        entry = scaling.find_flag(entries, name)
        if entry is None:
            if entries:
                known = ", ".join(str(e["flag"]) for e in entries if e.get("kind") in ("int", "float"))
                raise MemtopError(f"the script has no flag --{name}" + (f" (its number flags: {known})" if known else ""))
            entry = {"flag": f"--{name}", "dest": name.replace("-", "_"), "aliases": [], "value": None,
                     "kind": "int" if all(v.is_integer() for v in values) else "float"}
            notes.append(f"the script's flags could not be detected: {entry['flag']} is passed as given")
        role = scaling.scaling_role(entry)
        chosen = "given"
    else:
        picked = scaling.pick_scaling_flag(entries)
        if picked is None:
            raise MemtopError("no scaling flag (batch size, frames, sequence length, number of points, resolution) found in the script's flags: pass one with --vary NAME=V1,V2,V3, e.g. --vary batch-size=1,2,4")
        entry, role = picked
        values = scaling.default_values(scaling.current_value(entry), entry.get("kind") == "int")
        chosen = "detected"
        notes.append(f"varying {entry['flag']} ({scaling.SCALING_WORDS[role]}), found among the script's flags; pass --vary to choose another")
    integer = entry.get("kind") == "int" or (entry.get("kind") not in ("float",) and all(v.is_integer() for v in values))
    if entry.get("kind") == "int" and not all(v.is_integer() for v in values):
        raise MemtopError(f"{entry['flag']} takes whole numbers: got {', '.join(_fmt(v) for v in values)}")
    values = sorted(set(values))
    if len(values) < 2:
        raise MemtopError("a fit needs at least two different values: e.g. --vary batch-size=1,2,4")

    head, script_args = split_command(child, cwd)
    flag = str(entry["flag"])
    prefix = sanitize_name(args.name or f"fit-{flag.lstrip('-')}")
    savings: list[scaling.Saving] = []
    if not args.no_savings:
        savings, saving_notes = scaling.savings_for(entries, child, role, cwd)
        notes.extend(saving_notes)
    measured_savings = [s for s in savings if s.how == "measured"]
    runs = resolve_runs_dir(args)
    live = sys.stderr.isatty()
    progress = Progress(len(values) + len(measured_savings), args.steps, live)
    if not args.json or live:
        sys.stderr.write(f"[memtop fit] {len(values)} probes of {flag} ({', '.join(_fmt(v) for v in values)})"
                         + (f" + {len(measured_savings)} saving probes" if measured_savings else "")
                         + f", {args.steps} steps each, one at a time; runs in {runs}\n")

    def probe(spec: ProbeSpec, index: int) -> ProbeResult:
        result = run_probe(spec, runs, args.steps, lambda step, el: progress.update(index, spec.label, step, el))
        progress.done(index, _probe_text(result), result.duration)
        return result

    probes: list[ProbeResult] = []
    oom_at: float | None = None
    for i, v in enumerate(values, start=1):
        spec = ProbeSpec(v, [*head, *set_value(script_args, entry, _fmt(v))], f"{prefix}-{_fmt(v)}", f"{flag.lstrip('-')}={_fmt(v)}")
        if oom_at is not None:
            probes.append(ProbeResult(spec, None, "skipped", None, 0, None, None, message=f"a smaller value ({_fmt(oom_at)}) ran out of memory"))
            progress.done(i, _probe_text(probes[-1]), 0.0)
            continue
        result = probe(spec, i)
        probes.append(result)
        if result.status == "rejected":
            raise MemtopError(f"the script rejected {flag} {_fmt(v)}" + (f": {result.message}" if result.message else "") + (f" (run {result.run_dir})" if result.run_dir else ""))
        if result.status == "oom":
            oom_at = v
    usable = [p for p in probes if p.usable]
    for p in probes:
        if not p.usable:
            notes.append(f"probe {p.spec.label} not used: {p.status}" + (f" ({p.message})" if p.message else ""))
    if len({p.spec.value for p in usable}) < 2:
        why = "; ".join(f"{p.spec.label} {p.status}" + (f": {p.message}" if p.message else "") for p in probes if not p.usable)
        raise MemtopError(f"fewer than two usable probes, nothing to fit ({why or 'no step was recorded'})")
    if len(usable) < len(values):
        notes.append(f"the fit uses {len(usable)} of {len(values)} probes")
    model = capacity.fit_model(usable)
    top = max(usable, key=lambda p: p.spec.value)

    # One probe per saving the script can express, at the largest value that ran.
    saved_models: dict[str, capacity.PeakModel] = {}
    saving_probes: dict[str, ProbeResult] = {}
    index = len(values)
    for s in savings:
        if s.how == "estimated":
            saved_models[s.key] = model.scaled(s.factors)
        elif s.how == "measured" and s.args_change is not None:
            index += 1
            spec = ProbeSpec(top.spec.value, [*head, *set_value(s.args_change, entry, _fmt(top.spec.value))],
                             f"{prefix}-{_fmt(top.spec.value)}-{s.key}", f"{flag.lstrip('-')}={_fmt(top.spec.value)} {s.change}", saving=s.key)
            result = probe(spec, index)
            probes.append(result)
            saving_probes[s.key] = result
            if result.usable:
                saved_models[s.key] = capacity.measured_saving(model, top, result)
                s.assumption = f"measured at {flag} {_fmt(top.spec.value)}; each category's curve scaled by the ratio measured there"
            else:
                notes.append(f"saving {s.title} ({s.change}) not measured: its probe {result.status}" + (f" ({result.message})" if result.message else ""))

    # This device (or --device-memory).
    meta = read_meta(top.run_dir) if top.run_dir else None
    devices = (meta or {}).get("devices") or []
    device = devices[0] if devices and isinstance(devices[0], dict) else None
    if args.device_memory is not None:
        cap_bytes: int | None = args.device_memory
        source = "--device-memory"
    else:
        cap_bytes = device.get("total_bytes") if device and isinstance(device.get("total_bytes"), int) else None
        source = "device"
    margin = capacity.margin_from_probes(usable, for_this_device=True)
    low = 1.0 if integer else min(values) / 4
    largest = capacity.largest_fitting(lambda v: margin.need(model.peak(v)), cap_bytes, integer, low) if cap_bytes else None
    cards_margin = capacity.margin_from_probes(usable, for_this_device=False)
    cards = capacity.card_table(model, {k: m for k, m in saved_models.items()}, cards_margin, integer, low)
    if model.measure == "tracked":
        notes.append("measured on a CPU: the peak is the tracked tensors (parameters, gradients, optimizer state, activations); "
                     "temporaries (`other`) are not measured there, so GPU figures are a lower bound")
    if not at:
        at = [top.spec.value * 2, top.spec.value * 4]
    result_json = report.build(
        command=child, flag=entry, role=role, chosen=chosen, steps=args.steps, probes=probes, model=model, at=at,
        capacity_bytes=cap_bytes, capacity_source=source, device=device, margin=margin, largest=largest,
        cards_margin=cards_margin, cards=cards, savings=savings, saving_probes=saving_probes, notes=notes,
    )
    result_json["fit_record"] = str(_write_record(runs, prefix, result_json))
    if args.json:
        sys.stdout.write(json.dumps(result_json, indent=2) + "\n")
    else:
        from memtop.commands._common import terminal_width
        from memtop.render.fit import render_text

        sys.stdout.write(render_text(result_json, width=min(terminal_width(), 110)))
    sys.stdout.flush()
    return 0


def _write_record(runs: Path, prefix: str, data: dict[str, Any]) -> Path:
    """``<runs-dir>/fits/<stamp>-<prefix>.json``: the whole result, linking every probe's run directory."""
    folder = runs / "fits"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stamp}-{prefix}.json"
    n = 2
    while path.exists():
        path = folder / f"{stamp}-{prefix}-{n}.json"
        n += 1
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
