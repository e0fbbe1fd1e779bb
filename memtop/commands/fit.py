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
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memtop.commands import add_common_options
from memtop.commands.child_command import add_child_argument, positive_int
from memtop.errors import MemtopError
from memtop.fitting.probes import ProbeResult, ProbeSpec

if TYPE_CHECKING:
    from memtop.fitting.capacity import PeakModel
    from memtop.fitting.plan import Plan
    from memtop.fitting.scaling import Saving
    from memtop.runs.records import Device

NAME = "fit"
HELP = "capacity planning: the largest batch/frames/resolution that fits, from a few short probe runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "memtop fit [--vary NAME=V1,V2,V3] [--steps N] [--at V ...] [--device-memory SIZE] [--json] (-- CMD ARGS... | script.py ARGS...)"
    add_common_options(parser)
    parser.add_argument("--vary", action="append", default=[], metavar="NAME=V1,V2,...",
                        help="the flag to vary (without its dashes) and the values to probe; default: a scaling flag found in the script, at a quarter, half and all of its current value")
    parser.add_argument("--steps", type=positive_int, default=3, help="optimizer steps per probe (default 3)")
    parser.add_argument("--at", action="append", default=[], metavar="V", help="predict the peak at this value (repeat, or V1,V2)")
    from memtop.commands._device_memory import size_arg

    parser.add_argument("--device-memory", type=size_arg, default=None, metavar="SIZE",
                        help="plan for this much memory (e.g. 24GB) instead of this device's")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object (keys: docs/fit.md)")
    parser.add_argument("--name", default=None, help="prefix of the probe runs' names (default: fit-<flag>)")
    parser.add_argument("--no-savings", action="store_true", help="skip the probes that measure the advisor's savings")
    add_child_argument(parser)


def _fmt(v: float) -> str:
    from memtop.fitting.plan import fmt_value

    return fmt_value(v)


class Progress:
    """Which probe, its step, time left: one rewritten line on a terminal, a plain line per probe otherwise."""

    def __init__(self, total: int, steps: int, live: bool) -> None:
        self.total = total
        self.steps = steps
        self.live = live
        self.durations: list[float] = []
        self._last = 0.0

    def _left(self, index: int, elapsed: float | None) -> str:
        """Time left: the rest of probe ``index`` (None: it is done) and the probes after it, at the mean so far."""
        if not self.durations:
            return "time left: measuring the first probe"
        avg = sum(self.durations) / len(self.durations)
        left = (0.0 if elapsed is None else max(0.0, avg - elapsed)) + avg * (self.total - index)
        return f"≈{left:.0f} s left"

    def update(self, index: int, label: str, step: int, elapsed: float) -> None:
        if not self.live or time.monotonic() - self._last < 0.2:
            return
        self._last = time.monotonic()
        sys.stderr.write(f"\r\x1b[2K[memtop fit] probe {index}/{self.total} {label}: step {step}/{self.steps}, {elapsed:.0f} s, {self._left(index, elapsed)}")
        sys.stderr.flush()

    def done(self, index: int, text: str, duration: float, ran: bool = True) -> None:
        if ran:  # a skipped probe says nothing about how long one takes
            self.durations.append(duration)
        prefix = "\r\x1b[2K" if self.live else ""
        sys.stderr.write(f"{prefix}[memtop fit] probe {index}/{self.total} {text} ({duration:.1f} s; {self._left(index, None)})\n")
        sys.stderr.flush()


def _probe_text(p: Any) -> str:
    from memtop.units import fmt_bytes

    if p.usable:
        return f"{p.spec.label}: peak {fmt_bytes(p.peak_bytes)} ({'tracked' if p.measure == 'tracked' else 'allocator'}), run {p.run_dir.name if p.run_dir else '?'}"
    return f"{p.spec.label}: {p.status}" + (f" ({p.message})" if p.message else "")


def run(args: argparse.Namespace) -> int:
    from memtop.analyzers.flags import detect_flags
    from memtop.commands._common import runs_dir as resolve_runs_dir
    from memtop.fitting import capacity, plan, report, scaling
    from memtop.launcher import check_command
    from memtop.runs.rundir import sanitize_name

    child: list[str] = list(getattr(args, "child", []) or [])
    check_command(child)
    vary = plan.parse_vary(args.vary)
    at = [v for text in args.at for v in plan.parse_numbers(text, "--at")]
    cwd = Path.cwd()
    entries = detect_flags(child, cwd)
    p = plan.choose(entries, vary)
    notes = list(p.notes)
    savings: list[scaling.Saving] = []
    if not args.no_savings:
        savings, saving_notes = scaling.savings_for(entries, child, p.role, cwd)
        notes.extend(saving_notes)
    runner = _Runner(args, p, child, cwd, resolve_runs_dir(args), sanitize_name(args.name or f"fit-{p.flag.lstrip('-')}"),
                     n_savings=sum(1 for s in savings if s.how == "measured"))
    probes = runner.base_probes()
    usable = [x for x in probes if x.usable]
    notes += [f"probe {x.spec.label} not used: {x.status}" + (f" ({x.message})" if x.message else "") for x in probes if not x.usable]
    if len({x.spec.value for x in usable}) < 2:
        why = "; ".join(f"{x.spec.label} {x.status}" + (f": {x.message}" if x.message else "") for x in probes if not x.usable)
        raise MemtopError(f"fewer than two usable probes, nothing to fit ({why or 'no step was recorded'})")
    if len(usable) < len(p.values):
        notes.append(f"the fit uses {len(usable)} of {len(p.values)} probes")
    model = capacity.fit_model(usable)
    top = max(usable, key=lambda x: x.spec.value)
    saved_models, saving_probes = runner.saving_probes(savings, model, top, notes)
    probes += list(saving_probes.values())

    device = _device_of(top)
    cap_bytes, source = (args.device_memory, "--device-memory") if args.device_memory is not None else (
        device.total_bytes if device is not None else None, "device")
    margin = capacity.margin_from_probes(usable, for_this_device=True)
    low = 1.0 if p.integer else min(p.values) / 4
    largest = capacity.largest_fitting(lambda v: margin.need(model.peak(v)), cap_bytes, p.integer, low) if cap_bytes else None
    cards_margin = capacity.margin_from_probes(usable, for_this_device=False)
    cards = capacity.card_table(model, saved_models, cards_margin, p.integer, low)
    if model.measure == "tracked":
        notes.append("measured on a CPU: the peak is the tracked tensors (parameters, gradients, optimizer state, activations); "
                     "temporaries (`other`) are not measured there, so GPU figures are a lower bound")
    result_json = report.build(
        command=child, flag=p.entry, role=p.role, chosen=p.chosen, steps=args.steps, probes=probes, model=model,
        at=at or [top.spec.value * 2, top.spec.value * 4], capacity_bytes=cap_bytes, capacity_source=source, device=asdict(device) if device is not None else None,
        margin=margin, largest=largest, cards_margin=cards_margin, cards=cards, savings=savings, saving_probes=saving_probes, notes=notes,
    )
    result_json["fit_record"] = str(_write_record(runner.runs, runner.prefix, result_json))
    if args.json:
        sys.stdout.write(json.dumps(result_json, indent=2) + "\n")
    else:
        from memtop.commands._common import terminal_width
        from memtop.render.fit import render_text

        sys.stdout.write(render_text(result_json, width=min(terminal_width(), 110)))
    sys.stdout.flush()
    return 0


def _device_of(probe: ProbeResult) -> Device | None:
    """The probe run's device as meta.json lists it (the card, or the CPU and its RAM)."""
    from memtop.runs.rundir import load_meta

    meta = load_meta(probe.run_dir)[0] if probe.run_dir else None
    return meta.devices[0] if meta is not None and meta.devices else None


class _Runner:
    """Runs the probes one at a time, with progress, and turns the script's answers into results."""

    def __init__(self, args: argparse.Namespace, p: Plan, child: list[str], cwd: Path, runs: Path, prefix: str, n_savings: int) -> None:
        from memtop.analyzers.cmdline import split_command

        self.args, self.plan, self.runs, self.prefix = args, p, runs, prefix
        self.head, self.script_args = split_command(child, cwd)
        live = sys.stderr.isatty()
        self.progress = Progress(len(p.values) + n_savings, args.steps, live)
        if not args.json or live:
            sys.stderr.write(f"[memtop fit] {len(p.values)} probes of {p.flag} ({', '.join(_fmt(v) for v in p.values)})"
                             + (f" + {n_savings} saving probes" if n_savings else "")
                             + f", {args.steps} steps each, one at a time; runs in {runs}\n")
        self.index = 0

    def _argv(self, script_args: list[str], value: float) -> list[str]:
        from memtop.analyzers.cmdline import set_value

        return [*self.head, *set_value(script_args, self.plan.entry, _fmt(value))]

    def _run(self, spec: ProbeSpec) -> ProbeResult:
        from memtop.fitting.probes import run_probe

        self.index += 1
        index = self.index
        result = run_probe(spec, self.runs, self.args.steps, lambda step, el: self.progress.update(index, spec.label, step, el))
        self.progress.done(index, _probe_text(result), result.duration)
        return result

    def base_probes(self) -> list[ProbeResult]:
        """Smallest value first; a rejected value stops the fit; values above one that ran out of memory are skipped."""
        flag = self.plan.flag
        probes: list[ProbeResult] = []
        oom_at: float | None = None
        for v in self.plan.values:
            spec = ProbeSpec(v, self._argv(self.script_args, v), f"{self.prefix}-{_fmt(v)}", f"{flag.lstrip('-')}={_fmt(v)}")
            if oom_at is not None:
                self.index += 1
                probes.append(ProbeResult(spec, None, "skipped", None, 0, None, None, message=f"a smaller value ({_fmt(oom_at)}) ran out of memory"))
                self.progress.done(self.index, _probe_text(probes[-1]), 0.0, ran=False)
                continue
            result = self._run(spec)
            probes.append(result)
            if result.status == "rejected":
                raise MemtopError(f"the script rejected {flag} {_fmt(v)}" + (f": {result.message}" if result.message else "")
                                  + (f" (run {result.run_dir})" if result.run_dir else ""))
            if result.status == "oom":
                oom_at = v
        return probes

    def saving_probes(self, savings: list[Saving], model: PeakModel, top: ProbeResult, notes: list[str]) -> tuple[dict[str, PeakModel], dict[str, ProbeResult]]:
        """One probe per saving the script has a flag for, at the largest value that ran; estimates for the rest."""
        from memtop.fitting.capacity import measured_saving

        flag, v = self.plan.flag, top.spec.value
        models: dict[str, PeakModel] = {}
        probes: dict[str, ProbeResult] = {}
        for s in savings:
            if s.how == "estimated":
                models[s.key] = model.scaled(s.factors)
            elif s.how == "measured" and s.args_change is not None:
                spec = ProbeSpec(v, self._argv(s.args_change, v), f"{self.prefix}-{_fmt(v)}-{s.key}", f"{flag.lstrip('-')}={_fmt(v)} {s.change}", saving=s.key)
                result = probes[s.key] = self._run(spec)
                if result.usable:
                    models[s.key] = measured_saving(model, top, result)
                    s.assumption = f"measured at {flag} {_fmt(v)}; each category's curve scaled by the ratio measured there"
                else:
                    notes.append(f"saving {s.title} ({s.change}) not measured: its probe {result.status}" + (f" ({result.message})" if result.message else ""))
        return models, probes


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
