"""Human-readable byte figures (binary units, as nvidia-smi and PyTorch print them)."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt_bytes(n: float | None, signed: bool = False) -> str:
    """``1536 -> '1.5 KiB'``; ``None -> 'n/a'``; ``signed`` prefixes ``+`` on positive figures."""
    if n is None:
        return "n/a"
    sign = "-" if n < 0 else ("+" if signed and n > 0 else "")
    v = float(abs(n))
    unit = _UNITS[0]
    for unit in _UNITS:
        if v < 1024 or unit == _UNITS[-1]:
            break
        v /= 1024
    if unit == "B":
        return f"{sign}{int(v)} B"
    return f"{sign}{v:.1f} {unit}" if v < 100 else f"{sign}{v:.0f} {unit}"


def fmt_pct(p: float | None, signed: bool = False) -> str:
    if p is None:
        return "n/a"
    return f"{p:+.1f}%" if signed else f"{p:.1f}%"
