"""Short, fixed-width renderings of bytes, durations and counts for a dashboard read in two seconds."""

from __future__ import annotations

import signal

from memtop.units import fmt_bytes, fmt_pct  # one byte and one percent formatter for every view

__all__ = [
    "describe_exit_code",
    "fmt_bytes",
    "fmt_bytes_short",
    "fmt_count",
    "fmt_duration",
    "fmt_pct",
    "fmt_step_time",
    "shorten",
    "signal_name",
    "unit_for",
]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt_bytes_short(n: int | float | None, *, na: str = "n/a") -> str:
    """``5.5 GiB -> '5.5G'``: at most four cells, for legends in an 80-column terminal."""
    if n is None:
        return na
    value = float(abs(n))
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    letter = "B" if unit == 0 else _UNITS[unit][0]
    sign = "-" if n < 0 else ""
    if unit == 0 or value >= 10:
        return f"{sign}{value:.0f}{letter}"
    return f"{sign}{value:.1f}{letter}"


def unit_for(n: float) -> tuple[str, float]:
    """The unit and divisor that show ``n`` as a number under 1024 (for plot axes)."""
    value = abs(n)
    divisor = 1.0
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        divisor *= 1024
        unit += 1
    return _UNITS[unit], divisor


def fmt_duration(seconds: float | None) -> str:
    """``3725 -> '1:02:05'``, ``65 -> '1:05'``; the form of `time` output and nvitop."""
    if seconds is None or seconds < 0:
        return "–"
    total = int(seconds)
    hours, rem = divmod(total, 3600)
    minutes, secs = divmod(rem, 60)
    if hours >= 24:
        days, hours = divmod(hours, 24)
        return f"{days}d{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def fmt_step_time(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms/step"
    return f"{seconds:.2f} s/step"


def fmt_count(n: int) -> str:
    return f"{n:,}"


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def describe_exit_code(code: int | None) -> str:
    """How a process ended, from its exit code (128+N means killed by signal N)."""
    if code is None:
        return "running"
    if code == 0:
        return "exited 0"
    if code < 0:
        return f"killed by {signal_name(-code)}"
    if code > 128 and code - 128 < 65:
        return f"exit {code} ({signal_name(code - 128)})"
    return f"exited {code}"


def shorten(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` cells with an ellipsis in the middle (keeps both ends of names)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    head = (width - 1) // 2
    tail = width - 1 - head
    return f"{text[:head]}…{text[len(text) - tail:]}"
