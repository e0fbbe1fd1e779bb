"""Value checks shared by the decode steps of rank-file records and meta.json.

Each check returns the value when it is acceptable and raises :class:`Bad` (whose text is the
reason) otherwise. The limits say what a run directory may hold; see docs/run-format.md,
"Reading a run".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

MAX_LINE: Final = 1 << 20  # bytes per rank-file line
MAX_STR: Final = 4096  # characters of an identifier-like string (names, devices, paths)
MAX_MESSAGE: Final = 4096  # free text (OOM and warning messages) is cut to this
MAX_DEPTH: Final = 16  # nesting of any JSON value (the format needs 4)
MAX_ITEMS: Final = 4096  # entries of any list in a record (large tensors, shapes, command)
MAX_INT: Final = (1 << 63) - 1
MAX_TIME: Final = 1e11  # unix seconds (year ~5138); time.localtime refuses much larger values
MAX_SECONDS: Final = 1e9  # a duration
MAX_PATH: Final = 4000  # under Linux's PATH_MAX (4096) with room for a file name
MAX_PATH_PART: Final = 255  # a cwd with a longer component cannot be a path (ENAMETOOLONG)


class Bad(ValueError):
    """A value failed validation; ``str(exc)`` is the reason."""


def count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Bad(f"{what}: not an integer")
    if v < 0 or v > MAX_INT:
        raise Bad(f"{what}: out of range")
    return v


def opt_count(v: Any, what: str) -> int | None:
    return None if v is None else count(v, what)


def signed(v: Any, what: str) -> int | None:
    """An exit code or signal: any integer in range, or null."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or abs(v) > MAX_INT:
        raise Bad(f"{what}: not an integer in range")
    return v


def finite(v: Any, what: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Bad(f"{what}: not a number")
    try:
        f = float(v)
    except OverflowError:
        raise Bad(f"{what}: out of range") from None
    if not math.isfinite(f):
        raise Bad(f"{what}: not finite")
    return f


def nonneg(v: Any, what: str) -> float | None:
    f = finite(v, what)
    if f is not None and f < 0:
        raise Bad(f"{what}: negative")
    return f


def unix_time(v: Any, what: str) -> float | None:
    """A unix time that calendars can show (1970 up to about year 5000)."""
    f = finite(v, what)
    if f is not None and not 0 <= f <= MAX_TIME:
        raise Bad(f"{what}: not a unix time")
    return f


def seconds(v: Any, what: str) -> float | None:
    """A duration: non-negative and under ~30 years (timedelta and formatting stay safe)."""
    f = nonneg(v, what)
    if f is not None and f > MAX_SECONDS:
        raise Bad(f"{what}: out of range")
    return f


def pct(v: Any, what: str) -> float | None:
    f = finite(v, what)
    if f is not None and abs(f) > 1e6:
        raise Bad(f"{what}: out of range")
    return f


def short_str(v: Any, what: str, limit: int = MAX_STR) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise Bad(f"{what}: not a string")
    if len(v) > limit:
        raise Bad(f"{what}: longer than {limit} characters")
    return v


def text(v: Any, what: str) -> str:
    """Free text: cut, not refused, when long."""
    if v is None:
        return ""
    if not isinstance(v, str):
        raise Bad(f"{what}: not a string")
    return v if len(v) <= MAX_MESSAGE else v[: MAX_MESSAGE - 1] + "…"


def json_list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise Bad(f"{what}: not a list")
    if len(v) > MAX_ITEMS:
        raise Bad(f"{what}: more than {MAX_ITEMS} entries")
    return v


def json_obj(v: Any, what: str) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Bad(f"{what}: not an object")
    return v


def depth_ok(v: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``v`` nests at most ``limit`` deep and holds no over-long string (iterative)."""
    stack: list[tuple[Any, int]] = [(v, 0)]
    seen = 0
    while stack:
        x, d = stack.pop()
        seen += 1
        if seen > 100_000:
            return False
        if isinstance(x, dict):
            if d >= limit:
                return False
            for k, item in x.items():
                if len(k) > MAX_STR:
                    return False
                stack.append((item, d + 1))
        elif isinstance(x, list):
            if d >= limit:
                return False
            stack.extend((item, d + 1) for item in x)
        elif isinstance(x, str) and len(x) > MAX_STR:
            return False
        elif isinstance(x, float) and not math.isfinite(x):
            return False
    return True
