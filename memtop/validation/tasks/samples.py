"""Every sample run at GPU scale under ``memtop train --no-tui --max-steps N``: the run ends cleanly
after N steps, every step record satisfies the CUDA identities, and ``memtop analyze`` reads it.

Sizes follow sample_runs/README.md's "GPU scale" column, trimmed where it would need more than about
25 GiB (the smallest card this targets is an 80 GB H100)."""

from __future__ import annotations

import sys

from memtop.units import fmt_bytes, fmt_pct
from memtop.validation.taskkit import DEVICE, Result, TrainRun, analyze, md_table, memtop_train, sample, task_args

GPT = ["--n-layers", "12", "--d-model", "768", "--n-heads", "12", "--vocab-size", "32000", "--seq-len", "1024"]

# (name, sample, flags, in --quick)
RUNS: list[tuple[str, str, list[str], bool]] = [
    ("transformer-bf16", "transformer_finetune", [*GPT, "--batch-size", "8", "--amp", "--dtype", "bf16"], True),
    ("gaussian-splat", "gaussian_splat", ["--num-gaussians", "2000000", "--resolution", "1024"], True),
    ("video", "video_pipeline", ["--max-frames", "16", "--resolution", "256", "--batch-size", "4", "--channels", "64"], True),
    ("image-fit", "image_fit", ["--resolution", "1024", "--hidden", "256", "--layers", "5"], True),
    ("transformer-fp16-ckpt-accum", "transformer_finetune",
     [*GPT, "--batch-size", "4", "--gradient-accumulation-steps", "2", "--amp", "--dtype", "fp16", "--gradient-checkpointing"], False),
    ("transformer-lora", "transformer_finetune", [*GPT, "--batch-size", "8", "--lora-r", "8"], False),
    ("image-fit-amp", "image_fit", ["--resolution", "1024", "--hidden", "256", "--layers", "5", "--use-amp"], False),
]


HEADER = ["run", "flags", "verdict", "steps", "max peak", "max reserved", "max frag", "ms/step", "NVML − reserved (median)"]


def main() -> None:
    args = task_args(__doc__ or "")
    steps = 6 if args.quick else 12
    runs_dir = args.step_dir / "runs"
    res = Result()
    rows: list[list[str]] = []
    done: list[TrainRun] = []
    for name, script, flags, quick in RUNS:
        if args.quick and not quick:
            continue
        child = [sys.executable, sample(script), *flags, "--device", DEVICE, "--steps", "200", "--log-every", "5"]
        run = memtop_train(runs_dir, name, child, steps, timeout=75, expect_steps=steps)
        done.append(run)
        verdict = "ok"
        if run.proc.timed_out:
            res.fail(f"{name}: memtop train did not end within 75 s (log: samples/{name}.log)")
            verdict = "timeout"
        elif run.proc.rc != 0:
            res.fail(f"{name}: memtop train exited {run.proc.rc} (log: samples/{name}.log)")
            verdict = f"exit {run.proc.rc}"
        if not run.check.ok:
            res.fail(f"{name}: {run.check.summary()}")
            verdict = "identities broken" if verdict == "ok" else verdict
        if run.meta.status != "finished":
            res.fail(f"{name}: meta.json status is {run.meta.status!r}, expected 'finished'")
        if run.run_dir is not None:
            text, as_json, report = analyze(run.run_dir, args.step_dir / f"{name}.analyze.log")
            if text.rc != 0 or as_json.rc != 0 or report is None:
                res.fail(f"{name}: memtop analyze exited {text.rc} / --json {as_json.rc} (logs: samples/{name}.analyze*.log)")
        f = run.check.figures
        rows.append([name, " ".join(flags), verdict, str(run.check.steps), fmt_bytes(f.get("max_peak")), fmt_bytes(f.get("max_reserved")),
                     fmt_pct(f.get("max_fragmentation_pct")), f"{f['median_step_ms']:.1f}" if f.get("median_step_ms") else "n/a",
                     fmt_bytes(f.get("nvml_minus_reserved_median"))])
        if f.get("nvml_below_reserved_records"):
            res.note(f"- note: {name}: {f['nvml_below_reserved_records']} records have NVML device_used below reserved "
                     "(NVML is sampled at most once a second: a stale figure)")
        partial = Result(res.status, f"partial: {len(done)} runs done, killed before the rest", [*res.sections, md_table(HEADER, rows)], {})
        partial.write(args.step_dir)  # what a timeout of this step leaves behind
    res.note(md_table(HEADER, rows))
    res.note("\nEvery step record checked: sum of categories == peak, allocated + fragmentation_bytes == reserved, "
             "fragmentation_pct, peak ≥ allocated, no negative category, steps 1..N, no warning record.")
    ok = sum(1 for r in done if r.check.ok and r.proc.rc == 0)
    res.headline = f"{ok}/{len(done)} sample runs clean ({sum(r.check.steps for r in done)} step records checked)"
    res.figures = {r.name: r.check.figures for r in done}
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
