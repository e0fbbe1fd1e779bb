"""Fragmentation on the densifying Gaussian-splatting sample (``--densify-every``, ``--fragmentation
aggressive``: no empty_cache and scratch buffers of varying size), run twice: with the default
allocator and with ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``. Identities checked on every
step of both; the figures side by side; whether ``memtop analyze`` suggests expandable segments."""

from __future__ import annotations

import os
import sys
from typing import Any

from memtop.units import fmt_bytes, fmt_pct
from memtop.validation.taskkit import DEVICE, Result, analyze, md_table, memtop_train, sample, task_args

FLAGS = ["--num-gaussians", "1000000", "--resolution", "512", "--densify-every", "3", "--densify-fraction", "0.2",
         "--fragmentation", "aggressive", "--device", DEVICE, "--steps", "200", "--log-every", "5"]


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    steps = 15 if args.quick else 24
    rows: list[list[str]] = []
    figures: dict[str, dict[str, Any]] = {}
    base_env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    for name, conf in (("default", None), ("expandable", "expandable_segments:True")):
        env = dict(base_env)
        if conf:
            env["PYTORCH_CUDA_ALLOC_CONF"] = conf
        run = memtop_train(args.step_dir / "runs", f"splat-{name}", [sys.executable, sample("gaussian_splat"), *FLAGS], steps, timeout=75,
                           env=env, expect_steps=steps)
        if run.proc.rc != 0 or not run.check.ok:
            res.fail(f"{name}: exit {run.proc.rc}; {run.check.summary()}")
        suggests = "n/a"
        if run.run_dir is not None:
            text, _, _ = analyze(run.run_dir, args.step_dir / f"{name}.analyze.log")
            suggests = "yes" if "expandable_segments" in text.text().split("\n", 1)[-1] else "no"
        f = run.check.figures
        figures[name] = {**f, "analyze_suggests_expandable": suggests}
        rows.append([conf or "(unset)", str(run.check.steps), fmt_pct(f.get("max_fragmentation_pct")), fmt_pct(f.get("median_fragmentation_pct")),
                     fmt_bytes(f.get("max_reserved")), fmt_bytes(f.get("max_peak")), suggests])
    res.note(md_table(["PYTORCH_CUDA_ALLOC_CONF", "steps", "max frag", "median frag", "max reserved", "max peak",
                       "analyze suggests expandable_segments"], rows))
    d, e = figures.get("default", {}), figures.get("expandable", {})
    dm, em = d.get("median_fragmentation_pct"), e.get("median_fragmentation_pct")
    if isinstance(dm, float) and isinstance(em, float):
        verdict = "lower" if em < dm else "not lower"
        res.note(f"\nWith expandable segments the median fragmentation is {verdict}: {em:.1f}% vs {dm:.1f}%. "
                 "(Reported, not a pass criterion: which is lower depends on the workload.)")
        res.headline = f"median fragmentation {dm:.1f}% default vs {em:.1f}% expandable_segments; max reserved {fmt_bytes(d.get('max_reserved'))} vs {fmt_bytes(e.get('max_reserved'))}"
    else:
        res.headline = "no fragmentation figures"
    res.figures = figures
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
