"""`memtop fit` for people: probes, the fit per category, predictions with a plotext curve, the
largest value that fits this device, and the common-cards table. Reads only the JSON-ready dict."""

from __future__ import annotations

import re
from typing import Any

from memtop.fitting.report import peak_from_json
from memtop.render.text import table
from memtop.units import fmt_bytes

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SHORT = {"parameters": "params", "gradients": "grads", "optimizer_state": "optim", "activations": "acts", "other": "other"}


def _v(v: Any) -> str:
    if v is None:
        return "-"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _fit_cell(f: dict[str, Any]) -> str:
    if f.get("unbounded"):
        return "any"
    return "none" if f.get("value") is None else _v(f["value"])


def _curve_text(c: dict[str, Any], var: str) -> str:
    coef = c.get("coef") or []
    parts: list[str] = []
    for i, k in enumerate(coef):
        if i and not k:
            continue
        term = fmt_bytes(abs(k))
        term += "" if i == 0 else (f"·{var}" if i == 1 else f"·{var}²")
        parts.append(("- " if k < 0 else "+ ") + term if parts else ("-" if k < 0 else "") + term)
    return " ".join(parts) or "0 B"


def _plot(data: dict[str, Any], width: int, color: bool) -> list[str]:
    try:
        import plotext as plt
    except ImportError:
        return []
    preds = data["predictions"]
    xs_all = [p["value"] for p in preds]
    hi = max(xs_all)
    lo = min(xs_all)
    top = max(p["peak_bytes"] for p in preds)
    unit, div = ("GiB", 1 << 30) if top >= 1 << 30 else ("MiB", 1 << 20)
    n = 60
    cx = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    cy = [peak_from_json(data["fit"], x) / div for x in cx]
    plt.clear_figure()
    plt.plotsize(max(40, min(width, 100)), 14)
    plt.theme("pro" if color else "clear")
    plt.plot(cx, cy, label="fitted peak", marker="braille")
    mx = [p["value"] for p in preds if p["measured_peak_bytes"] is not None]
    my = [p["measured_peak_bytes"] / div for p in preds if p["measured_peak_bytes"] is not None]
    plt.scatter(mx, my, label="measured", marker="o")
    plt.ylim(0, top / div * 1.05)  # from zero: a flat fit stays a flat line, not float noise
    plt.xlabel(str(data.get("flag")))
    plt.ylabel(unit)
    out = plt.build()
    plt.clear_figure()
    if not color:
        out = _ANSI.sub("", out)
    return ["  " + line.rstrip() for line in out.splitlines()]


def render_text(data: dict[str, Any], width: int = 100, color: bool = False, plot: bool = True) -> str:
    flag = str(data.get("flag"))
    var = flag.lstrip("-")
    measure = "tracked peak (CPU: parameters + gradients + optimizer state + activations)" if data["measure"] == "tracked" else "allocator peak"
    lines = [f"memtop fit: {flag}" + (" (found among the script's flags)" if data.get("flag_chosen") == "detected" else ""),
             f"  {data['steps']} steps per probe, one probe at a time; {measure}"]

    lines.append("\nPROBES")
    rows = []
    for p in data["probes"]:
        cats = p.get("categories") or {}
        rows.append([p["label"], fmt_bytes(p["peak_bytes"], na="-"),
                     *(fmt_bytes(cats.get(c), na="-") for c in ("parameters", "gradients", "optimizer_state", "activations", "other")),
                     p["status"] if p["used"] or p["status"] != "finished" else "not used", p["run_id"] or "-"])
    lines += table(["probe", "peak", "params", "grads", "optim", "acts", "other", "status", "run"], rows, "lrrrrrrll")

    fit = data["fit"]
    lines.append(f"\nFIT PER CATEGORY  (the step's peak is at {fit['peak_moment'].replace('_', ' ')} at the largest probe)")
    rows = []
    for c, cur in fit["categories"].items():
        rows.append([_SHORT.get(c, c), cur["kind"], _curve_text(cur, var), fmt_bytes(cur["residual_bytes"])])
    lines += table(["category", "form", "bytes", "rms residual"], rows, "lllr")
    tot = fit["total"]
    lines.append(f"  peak: rms residual {fmt_bytes(tot['residual_bytes'])}, worst {fmt_bytes(tot['max_residual_bytes'])} over the probes")

    lines.append("\nPREDICTED PEAK")
    rows = [[_v(p["value"]), fmt_bytes(p["peak_bytes"]), fmt_bytes(p["measured_peak_bytes"], na="-"),
             "probed" if p["probed"] else ("extrapolated" if p["extrapolated"] else "interpolated")] for p in data["predictions"]]
    lines += table([var, "predicted", "measured", ""], rows, "rrrl")
    if plot:
        lines += _plot(data, width - 2, color)

    cap = data["capacity"]
    dev = data.get("device") or {}
    lines.append("\nTHIS DEVICE")
    if cap.get("memory_bytes"):
        where = "--device-memory" if cap["source"] == "--device-memory" else f"{dev.get('name', 'device')} ({dev.get('kind', '?')})"
        lines.append(f"  {fmt_bytes(cap['memory_bytes'])} ({where}); held back: {cap['margin']['text']}")
        lv = cap.get("largest_value") or {}
        if lv.get("unbounded"):
            lines.append(f"  memory does not grow with {flag}: any value fits")
        elif lv.get("value") is None:
            lines.append(f"  not even {flag} at its smallest value fits")
        else:
            lines.append(f"  largest {flag} that fits: {_v(lv['value'])}")
    else:
        lines.append("  the device's memory is unknown: pass --device-memory SIZE")

    cards = data["cards"]
    savings = data["savings"]
    lines.append(f"\nCOMMON CARDS  largest {flag} that fits; held back: {cards['margin']['text']}")
    heads = ["card", "as is", *(s["title"] + ("*" if s["how"] == "estimated" else "") for s in savings)]
    rows = []
    for r in cards["rows"]:
        cells = [f"{r['gb']} GB", _fit_cell(r["as_is"])]
        for s in savings:
            if s["key"] in r["savings"]:
                cells.append(_fit_cell(r["savings"][s["key"]]))
            elif s["how"] == "arithmetic":
                cells.append(f"{_fit_cell(r['as_is'])}×K")
            else:
                cells.append("-")
        rows.append(cells)
    lines += table(heads, rows)
    if savings:
        lines.append("  savings:")
        for s in savings:
            how = {"measured": "measured", "estimated": "* estimated", "arithmetic": "arithmetic"}[s["how"]]
            run = f", probe run {s['probe_run_id']}" if s.get("probe_run_id") else ""
            lines.append(f"    {s['title']}: {s['change']} — {how}: {s['assumption']}{run}")
    if data.get("notes"):
        lines.append("\nNOTES")
        lines += [f"  - {n}" for n in data["notes"]]
    lines.append(f"\nfit record: {data.get('fit_record')}; each probe is a run: `memtop analyze RUN`, `memtop compare RUN_A RUN_B`")
    return "\n".join(lines) + "\n"
