"""Run a script under a CUDA memory cap, as a smaller card would: ``python -m memtop.validation.capped
CAP_BYTES SCRIPT ARGS...`` sets ``torch.cuda.set_per_process_memory_fraction(CAP / total)`` and then
runs SCRIPT as ``__main__``. The cap never exceeds the card: a larger CAP is refused."""

from __future__ import annotations

import runpy
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.stderr.write("usage: python -m memtop.validation.capped CAP_BYTES SCRIPT [ARGS...]\n")
        return 2
    cap = int(argv[0])
    import torch

    if not torch.cuda.is_available():
        sys.stderr.write("memtop.validation.capped: no CUDA device\n")
        return 2
    total = torch.cuda.get_device_properties(0).total_memory
    if not 0 < cap <= total:
        sys.stderr.write(f"memtop.validation.capped: cap {cap} is not within the card's {total} bytes\n")
        return 2
    torch.cuda.set_per_process_memory_fraction(cap / total, 0)
    sys.argv = argv[1:]
    runpy.run_path(argv[1], run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
