"""Memory sizes as users write them: ``24GB``, ``24G``, ``24GiB``, ``1536MiB``, ``8e9``.

G/GB/GiB all mean 2^30 bytes, as on the cards' labels (an "80 GB" A100 has 80 GiB) and as
nvidia-smi and PyTorch print them; a bare number is bytes.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes, or ValueError with a message fit for one line."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a memory size: {text!r} (write e.g. 24GB, 1536MiB or a number of bytes)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not value >= 1 or value != value or value == float("inf"):
        raise ValueError(f"memory size must be positive: {text!r}")
    return int(value)
