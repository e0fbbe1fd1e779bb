"""The machine as found: versions, the card and its free memory, nvidia-smi, and the packages that
memtop must do without here (textual, plotext, msgspec, hypothesis)."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess

import torch

from memtop.units import fmt_bytes
from memtop.validation.taskkit import FAIL, Result, md_table, task_args


def main() -> None:
    args = task_args(__doc__ or "")
    res = Result()
    rows: list[list[str]] = [["python", platform.python_version()], ["torch", f"{torch.__version__} (CUDA {torch.version.cuda})"]]
    for mod in ("pynvml", "psutil", "tensorboard", "pytest", "textual", "textual_plotext", "plotext", "msgspec", "hypothesis"):
        rows.append([mod, "installed" if importlib.util.find_spec(mod) else "absent"])
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    rows += [["device", f"{props.name} (sm_{props.major}{props.minor}), {torch.cuda.device_count()} visible"],
             ["memory", f"total {fmt_bytes(total)}, free {fmt_bytes(free)} at start"]]
    res.figures = {"device": props.name, "total_bytes": int(total), "free_bytes": int(free)}
    if free < total * 0.5:
        res.fail(f"only {fmt_bytes(free)} of {fmt_bytes(total)} free: another process holds the card, figures will be off")
    res.note(md_table(["what", "found"], rows))
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=30)
        (args.step_dir / "nvidia-smi.txt").write_text(out.stdout + out.stderr)
        res.note("\n`nvidia-smi` output: [nvidia-smi.txt](env/nvidia-smi.txt)")
    res.headline = f"{props.name}, {fmt_bytes(total)}; torch {torch.__version__}; textual {'installed' if importlib.util.find_spec('textual') else 'absent'}"
    if res.status == FAIL:
        res.headline += "; card busy"
    res.write(args.step_dir)


if __name__ == "__main__":
    main()
