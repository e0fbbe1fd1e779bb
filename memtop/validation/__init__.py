"""GPU validation: every CUDA figure memtop claims, checked by one command on a GPU machine.

Run it with ``scripts/gpu_validation.sh OUTDIR`` (or ``python3 -m memtop.validation OUTDIR``) from the
repository root. It needs only torch, psutil, nvidia-ml-py, tensorboard and pytest (no textual), runs
each check in its own process with its own timeout, and writes raw output plus ``summary.md`` into
OUTDIR. Nothing here is imported by the hook or the CLI.
"""
