"""An OOM captured under a memory cap: the transformer sample with ``--leak`` (it keeps every loss with
its graph) under ``set_per_process_memory_fraction`` runs out of memory after a few steps. Checked:
memtop train passes the failure on, meta.json says ``oom``, exactly one ``oom`` record with the
requested bytes, the breakdown and allocator state, the steps before it satisfy the identities, and
``memtop analyze`` (text and --json) explains it."""

from __future__ import annotations

import sys

from memtop.runs.records import ExitRecord, OomRecord
from memtop.units import fmt_bytes
from memtop.validation.checks import read_records
from memtop.validation.taskkit import Result, analyze, cuda_total_bytes, md_table, memtop_train, sample, task_args

CAP = 12 << 30
FLAGS = ["--n-layers", "12", "--d-model", "768", "--n-heads", "12", "--vocab-size", "32000", "--seq-len", "1024",
         "--batch-size", "2", "--amp", "--dtype", "bf16", "--leak"]


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    cap = min(CAP, cuda_total_bytes() // 2)
    child = [sys.executable, "-m", "memtop.validation.capped", str(cap), sample("transformer_finetune"), *FLAGS,
             "--device", "cuda", "--steps", "100", "--log-every", "1"]
    run = memtop_train(args.step_dir / "runs", "oom-leak", child, max_steps=80, timeout=70)
    res.note(f"Cap {fmt_bytes(cap)} of the card's {fmt_bytes(cuda_total_bytes())}; command in [oom-leak.log](oom/oom-leak.log).")
    if run.proc.timed_out:
        res.fail("memtop train did not end within 70 s")
    elif run.proc.rc == 0:
        res.fail("the run finished without an OOM (exit 0): the cap was not reached")
    if run.run_dir is None:
        res.fail("no run directory")
        res.headline = "no run directory"
        res.write(args.step_dir)
        return
    records = read_records(run.run_dir / "rank0.jsonl")
    ooms = records.of_class(OomRecord)
    exits = records.of_class(ExitRecord)
    status = run.meta.status
    if status != "oom":
        res.fail(f"meta.json status is {status!r}, expected 'oom'")
    if len(ooms) != 1:
        res.fail(f"{len(ooms)} oom records, expected 1")
    rows: list[list[str]] = []
    if ooms:
        oom = ooms[0]
        cats = oom.categories.as_dict()
        req = oom.requested_bytes
        rows += [["message", oom.message[:160]], ["requested_bytes", fmt_bytes(req)], ["step", str(oom.step)], ["device", str(oom.device)],
                 ["allocated", fmt_bytes(oom.allocated)], ["reserved", fmt_bytes(oom.reserved)], ["device_free", fmt_bytes(oom.device_free)]]
        rows.append(["categories", ", ".join(f"{k} {fmt_bytes(v)}" for k, v in cats.items())])
        if not (req is not None and req > 0):
            res.fail(f"requested_bytes is {req!r}")
        if not oom.categories.parameters:
            res.fail(f"the breakdown has no parameters: {cats}")
        allocated = oom.allocated
        if allocated is None or allocated > cap:
            res.fail(f"allocated at the OOM is {allocated!r} (cap {cap})")
        if allocated is not None and req is not None and allocated + req <= cap * 0.9:
            res.note(f"- note: allocated + requested = {fmt_bytes(allocated + req)}, well under the cap: fragmentation or another limit?")
    if exits and exits[-1].reason != "oom":
        res.fail(f"exit record reason {exits[-1].reason!r}, expected 'oom'")
    if not run.check.ok and run.check.steps:
        res.fail(f"steps before the OOM: {run.check.summary()}")
    res.note(md_table(["oom record", "value"], rows))
    text, as_json, report = analyze(run.run_dir, args.step_dir / "analyze.log")
    said = text.text().split("\n", 1)[-1]  # without the command line (its paths say "oom")
    if text.rc != 0 or "OUT OF MEMORY" not in said.upper():
        res.fail(f"memtop analyze exited {text.rc} and/or has no OUT OF MEMORY section (analyze.log)")
    if as_json.rc != 0 or report is None:
        res.fail(f"memtop analyze --json exited {as_json.rc} or printed no JSON object (analyze.json.log)")
    elif not isinstance(report.get("oom"), dict):
        res.fail(f"memtop analyze --json: \"oom\" is {report.get('oom')!r}, not the OOM explanation")
    res.note(f"\n{run.check.steps} step records before the OOM; memtop analyze: [analyze.log](oom/analyze.log), "
             "[analyze.json.log](oom/analyze.json.log).")
    res.headline = (f"OOM at step {ooms[0].step}, requested {fmt_bytes(ooms[0].requested_bytes)}, status {status!r}, exit {run.proc.rc}"
                    if ooms else f"no oom record (status {status!r}, exit {run.proc.rc})")
    res.figures = {"cap": cap, "oom": ooms[0].as_json() if ooms else None, "exit_code": run.proc.rc}
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
