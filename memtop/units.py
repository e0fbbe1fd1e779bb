"""Human renderings of bytes and percents shared by every output (status lines, reports, dashboard)."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt_bytes(n: int | float | None, signed: bool = False, *, na: str = "n/a") -> str:
    """``1536 -> '1.50 KiB'``; three significant digits so columns stay narrow (binary units, as
    nvidia-smi and PyTorch print them); ``signed`` prefixes ``+`` on positive figures."""
    if n is None:
        return na
    value = float(n)
    sign = "-" if value < 0 else ("+" if signed and value > 0 else "")
    value = abs(value)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{sign}{int(value)} B"
    if value >= 100:
        return f"{sign}{value:.0f} {_UNITS[unit]}"
    if value >= 10:
        return f"{sign}{value:.1f} {_UNITS[unit]}"
    return f"{sign}{value:.2f} {_UNITS[unit]}"


def fmt_pct(p: float | None, signed: bool = False, *, na: str = "n/a") -> str:
    if p is None:
        return na
    return f"{p:+.1f}%" if signed else f"{p:.1f}%"
