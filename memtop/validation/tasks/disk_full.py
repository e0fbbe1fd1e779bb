"""A full disk under ``memtop train`` on CUDA (issue 7's case, on the GPU): the runs directory on a
tiny tmpfs when this machine lets us mount one (root), else every file capped by RLIMIT_FSIZE (writes
past the cap fail with EFBIG, as they would with ENOSPC). The training must not hang, must finish,
and every step record that reached the disk must be whole and numbered 1..n."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from memtop.runs.records import StepRecord
from memtop.validation.checks import read_records
from memtop.validation.taskkit import DEVICE, Result, md_table, memtop_train, sample, task_args

TMPFS_SIZE = "256k"
FSIZE_CAP = 128 * 1024
STEPS = 300
CHILD = ["--n-layers", "4", "--d-model", "256", "--n-heads", "4", "--seq-len", "256", "--batch-size", "8",
         "--device", DEVICE, "--steps", str(STEPS), "--log-every", "1"]


def _mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "memtop-full", str(where)], capture_output=True, timeout=20)
    return out.returncode == 0


def _cap_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_CAP, FSIZE_CAP))


def _disk_filled(scratch: Path, run_dir: Path | None, mounted: bool) -> bool:
    """Whether the case was exercised: the tmpfs has no room left, or a file reached the size cap."""
    if mounted:
        st = os.statvfs(scratch)
        return st.f_bavail * st.f_frsize < 16 * 1024
    files = [p for p in run_dir.rglob("*") if p.is_file()] if run_dir is not None else []
    return any(p.stat().st_size >= FSIZE_CAP - 4096 for p in files)


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    scratch = Path(tempfile.mkdtemp(prefix="memtop-full-"))
    mounted = _mount_tmpfs(scratch)
    how = f"runs dir on a {TMPFS_SIZE} tmpfs" if mounted else f"RLIMIT_FSIZE {FSIZE_CAP // 1024} KiB on memtop train and its child"
    child = [sys.executable, sample("transformer_finetune"), *CHILD]
    # memtop train's own output goes to the real disk (OUTDIR), only the runs dir is full
    runs_dir = scratch / "runs"
    runs_dir.mkdir()
    saved = args.step_dir / "runs"
    try:
        run = memtop_train(runs_dir, "disk-full", child, None, timeout=75, preexec=None if mounted else _cap_file_size,
                           log=args.step_dir / "disk-full.log")
        filled = _disk_filled(scratch, run.run_dir, mounted)
        if run.run_dir is not None:
            shutil.copytree(run.run_dir, saved / run.run_dir.name, ignore_dangling_symlinks=True)
    finally:
        if mounted:
            subprocess.run(["umount", str(scratch)], capture_output=True, timeout=20)
        shutil.rmtree(scratch, ignore_errors=True)
    out = run.proc.text()
    finished = "done:" in out or any("done:" in p.read_text(errors="replace") for p in saved.glob("*/output.log"))
    records = read_records(next(iter(saved.glob("*/rank0.jsonl")), saved / "none"))
    numbers = [r.step for r in records.of_class(StepRecord)]
    rows = [["how the disk was filled", how], ["memtop train", "killed at 75 s" if run.proc.timed_out else f"exit {run.proc.rc} in {run.proc.seconds:.0f} s"],
            ["training finished (`done:` line seen)", "yes" if finished else "no"],
            ["step records on disk", f"{len(numbers)} of {STEPS}, {records.bad_lines} partial/bad lines"],
            ["meta.json status", str(run.meta.status)], ["the disk filled up", "yes" if filled else "no"]]
    res.note(md_table(["disk full", "found"], rows))
    if not filled:
        res.fail("the disk never filled up: the case was not exercised (more steps or a smaller cap needed)")
    if run.proc.timed_out:
        res.fail(f"memtop train did not end within 75 s (hung, or slower than expected): last step on disk {numbers[-1] if numbers else None}")
    if not finished:
        res.fail("the training did not print its `done:` line: it did not finish")
    if run.proc.rc not in (0, None):
        res.fail(f"memtop train exited {run.proc.rc}; the training itself should have finished with 0")
    if not numbers:
        res.fail("no step record reached the disk")
    elif numbers != list(range(1, len(numbers) + 1)):
        res.fail(f"the step records on disk are not 1..n: {numbers[:10]}...")
    if records.bad_lines > 1:
        res.fail(f"{records.bad_lines} partial lines: more than the record in flight was lost")
    tail = [ln for ln in out.splitlines() if "memtop" in ln.lower()][-5:]
    if tail:
        res.note("\nmemtop's own lines:\n\n```\n" + "\n".join(tail) + "\n```")
    res.headline = f"{how}: {'hung' if run.proc.timed_out else f'exit {run.proc.rc}'}, training {'finished' if finished else 'did not finish'}, {len(numbers)} step records on disk"
    res.figures = {"mounted_tmpfs": mounted, "disk_filled": filled, "exit_code": run.proc.rc, "steps_on_disk": len(numbers), "finished": finished}
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
