"""The one lenient decode step: a rank-file line becomes a typed record or a counted skip.

Everything a run directory holds may be truncated, hand-edited, corrupted or hostile; it is
validated here once, so readers trust what they get:

* byte counts, steps, ranks and pids are non-negative integers below 2**63 (JSON accepts
  ``1e400``-sized integers that ``float()`` cannot take);
* floats are finite (``NaN``, ``Infinity`` and ``1e309`` are refused);
* strings are at most :data:`MAX_STR` characters (free-text messages are cut instead);
* a line is at most :data:`MAX_LINE` bytes, and nesting depth is bounded (``json.loads`` raises
  ``RecursionError`` on deep nesting: caught);
* a record of an unknown type or of a newer schema than this memtop reads is skipped.

A line that fails any check is skipped whole, with its reason (:class:`Skip`), never half-read.
``meta.json`` is decoded the same way, except that a bad field is dropped (reads as ``None``) and
the rest of the file is kept: one bad value must not lose the run's command and times.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from memtop.runs.format import CATEGORIES, SCHEMA_VERSION
from memtop.runs.records import (
    RECORD_CLASSES,
    Categories,
    Device,
    ExitRecord,
    LargeTensor,
    Moment,
    OomRecord,
    Record,
    RunMeta,
    StageRecord,
    StepRecord,
    WarningRecord,
)

MAX_LINE: Final = 1 << 20  # bytes per rank-file line
MAX_META: Final = 4 << 20  # bytes of meta.json
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


@dataclass(frozen=True, slots=True)
class Skip:
    """A line that did not become a record, and why (one of :data:`REASONS`' keys)."""

    reason: str
    detail: str = ""


REASONS: Final = {
    "too_long": "longer than 1 MiB",
    "bad_json": "not JSON (truncated or garbage)",
    "too_deep": "nested too deeply",
    "not_object": "not a JSON object with a \"type\"",
    "unknown_type": "unknown record type",
    "newer_schema": "written by a newer memtop (newer schema)",
    "bad_value": "a value of the wrong type or out of range",
}


class SkipCounter(Counter[str]):
    """Skipped lines by reason."""

    def describe(self) -> str:
        """``"3 line(s) skipped: 2 not JSON (truncated or garbage), 1 longer than 1 MiB"``."""
        parts = [f"{n} {REASONS.get(reason, reason)}" for reason, n in self.most_common()]
        return f"{sum(self.values())} unreadable line(s) skipped: " + ", ".join(parts)


# ------------------------------------------------------------------------------ value checks


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Bad(f"{what}: not an integer")
    if v < 0 or v > MAX_INT:
        raise Bad(f"{what}: out of range")
    return v


def _opt_int(v: Any, what: str) -> int | None:
    return None if v is None else _int(v, what)


def _signed(v: Any, what: str) -> int | None:
    """An exit code or signal: any integer in range, or null."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or abs(v) > MAX_INT:
        raise Bad(f"{what}: not an integer in range")
    return v


def _float(v: Any, what: str) -> float | None:
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


def _nonneg_float(v: Any, what: str) -> float | None:
    f = _float(v, what)
    if f is not None and f < 0:
        raise Bad(f"{what}: negative")
    return f


def _time(v: Any, what: str) -> float | None:
    """A unix time that calendars can show (1970 up to about year 5000)."""
    f = _float(v, what)
    if f is not None and not 0 <= f <= MAX_TIME:
        raise Bad(f"{what}: not a unix time")
    return f


def _seconds(v: Any, what: str) -> float | None:
    """A duration: non-negative and under ~30 years (timedelta and formatting stay safe)."""
    f = _nonneg_float(v, what)
    if f is not None and f > MAX_SECONDS:
        raise Bad(f"{what}: out of range")
    return f


def _pct(v: Any, what: str) -> float | None:
    f = _float(v, what)
    if f is not None and abs(f) > 1e6:
        raise Bad(f"{what}: out of range")
    return f


def _str(v: Any, what: str, limit: int = MAX_STR) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise Bad(f"{what}: not a string")
    if len(v) > limit:
        raise Bad(f"{what}: longer than {limit} characters")
    return v


def _text(v: Any, what: str) -> str:
    """Free text: cut, not refused, when long."""
    if v is None:
        return ""
    if not isinstance(v, str):
        raise Bad(f"{what}: not a string")
    return v if len(v) <= MAX_MESSAGE else v[: MAX_MESSAGE - 1] + "…"


def _list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise Bad(f"{what}: not a list")
    if len(v) > MAX_ITEMS:
        raise Bad(f"{what}: more than {MAX_ITEMS} entries")
    return v


def _obj(v: Any, what: str) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Bad(f"{what}: not an object")
    return v


def _depth_ok(v: Any, limit: int = MAX_DEPTH) -> bool:
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


# The three below run for every decoded step (16 large tensors each): checks are inlined, and
# ``type(v) is int`` (not isinstance) also refuses bools.


def _check_counts(values: tuple[Any, ...], what: str) -> None:
    for v in values:
        if v is not None and (type(v) is not int or v < 0 or v > MAX_INT):
            raise Bad(f"{what}: not a byte count")


def _categories(v: Any, what: str = "categories") -> Categories:
    if v is None:
        return _NO_CATEGORIES
    if type(v) is not dict:
        raise Bad(f"{what}: not an object")
    g = v.get
    values = (g("parameters"), g("gradients"), g("optimizer_state"), g("activations"), g("other"))
    _check_counts(values, what)
    if len(v) > len(CATEGORIES):  # a newer writer's extra category: a byte count like the rest
        if len(v) > 64 or any(len(k) > 64 for k in v):
            raise Bad(f"{what}: too many or too long keys")
        _check_counts(tuple(v.values()), what)
    return Categories(*values)


_MOMENT_KEYS: Final = ("allocated", "parameters", "gradients", "optimizer_state", "activations")


def _moments(v: Any) -> dict[str, Moment]:
    if v is None:
        return {}
    if type(v) is not dict:
        raise Bad("moments: not an object")
    if len(v) > 16:
        raise Bad("moments: too many entries")
    out: dict[str, Moment] = {}
    for point, m in v.items():
        if len(point) > 64:
            raise Bad("moments: key too long")
        if type(m) is not dict:
            raise Bad(f"moments.{point}: not an object")
        g = m.get
        values = (g("allocated"), g("parameters"), g("gradients"), g("optimizer_state"), g("activations"))
        _check_counts(values, f"moments.{point}")
        if len(m) > 5:
            if len(m) > 64 or any(len(k) > 64 for k in m):
                raise Bad("moments: too many or too long keys")
            _check_counts(tuple(m.values()), f"moments.{point}")
        out[point] = Moment(*values)
    return out


_INT_TYPES: Final = frozenset({int})
_SEEN_TENSORS: dict[Any, tuple[dict[str, Any], LargeTensor]] = {}


def _large_tensors(v: Any) -> tuple[LargeTensor, ...]:
    if v is None:
        return ()
    if type(v) is not list:
        raise Bad("large_tensors: not a list")
    if len(v) > MAX_ITEMS:
        raise Bad("large_tensors: too many entries")
    out: list[LargeTensor] = []
    append = out.append
    seen = _SEEN_TENSORS
    for d in v:
        if type(d) is not dict:
            raise Bad("large_tensors[]: not an object")
        g = d.get
        name = g("name")
        hit = seen.get(name) if type(name) is str else None
        # The hook repeats the same tensors step after step: an entry equal to one already
        # validated (a dict comparison in C) reuses it. Equality alone would let a bool pass for
        # its int (True == 1), hence the type check on the size.
        if hit is not None and hit[0] == d and type(g("bytes")) is int:
            append(hit[1])
            continue
        size, shape, cat, dtype = g("bytes"), g("shape"), g("category"), g("dtype")
        if type(name) is not str or len(name) > MAX_STR:
            raise Bad("large_tensors[].name: not a string (or too long)")
        if type(size) is not int or size < 0 or size > MAX_INT:
            raise Bad("large_tensors[].bytes: not a byte count")
        if shape is None:
            dims: tuple[int, ...] = ()
        elif type(shape) is list and len(shape) <= 64 and (not shape or (set(map(type, shape)) == _INT_TYPES and min(shape) >= 0 and max(shape) <= MAX_INT)):
            dims = tuple(shape)
        else:
            raise Bad("large_tensors[].shape: not a list of sizes")
        if cat is None:
            cat = "unknown"
        elif type(cat) is not str or len(cat) > 64:
            raise Bad("large_tensors[].category: not a short string")
        if dtype is None:
            dtype = "unknown"
        elif type(dtype) is not str or len(dtype) > 64:
            raise Bad("large_tensors[].dtype: not a short string")
        t = LargeTensor(name, cat, size, dims, dtype)
        append(t)
        if len(seen) >= 4096:
            seen.clear()
        seen[name] = ({**d, "shape": list(shape) if type(shape) is list else shape}, t)
    return tuple(out)


# ------------------------------------------------------------------------------ records

_NO_CATEGORIES: Final = Categories()
_WALK_OVER: Final = 512
_COMMON: Final = frozenset({"type", "schema", "rank", "time"})


_STEP_COUNTS: Final = (
    "rank",
    "allocated",
    "reserved",
    "peak",
    "activations_step",
    "tracked",
    "fragmentation_bytes",
    "inactive_split_bytes",
    "device_used",
    "device_total",
    "sample_every",
)


def _step(d: Mapping[str, Any], schema: int) -> StepRecord:
    g = d.get
    for k in _STEP_COUNTS:
        v = g(k)
        if v is not None and (type(v) is not int or v < 0 or v > MAX_INT):
            raise Bad(f"{k}: not a non-negative integer below 2**63")
    return StepRecord(
        step=_int(g("step"), "step"),
        schema=schema,
        rank=g("rank"),
        time=_time(g("time"), "time"),
        device=_str(g("device"), "device", 64),
        step_time=_seconds(g("step_time"), "step_time"),
        allocated=g("allocated"),
        reserved=g("reserved"),
        peak=g("peak"),
        categories=_categories(g("categories")),
        peak_point=_str(g("peak_point"), "peak_point", 64),
        activations_step=g("activations_step"),
        tracked=g("tracked"),
        fragmentation_bytes=g("fragmentation_bytes"),
        fragmentation_pct=_pct(g("fragmentation_pct"), "fragmentation_pct"),
        inactive_split_bytes=g("inactive_split_bytes"),
        device_used=g("device_used"),
        device_total=g("device_total"),
        large_tensors=_large_tensors(g("large_tensors")),
        moments=_moments(g("moments")),
        sample_every=g("sample_every"),
        doc=d,
    )


def _stage(d: Mapping[str, Any], schema: int) -> StageRecord:
    g = d.get
    name = _str(g("name"), "name", 256)
    if not name:
        raise Bad("name: missing")
    return StageRecord(
        name=name,
        schema=schema,
        rank=_opt_int(g("rank"), "rank"),
        time=_time(g("time"), "time"),
        step=_opt_int(g("step"), "step"),
        duration=_seconds(g("duration"), "duration"),
        before=_opt_int(g("before"), "before"),
        after=_opt_int(g("after"), "after"),
        peak=_opt_int(g("peak"), "peak"),
        measure=_str(g("measure"), "measure", 64),
        doc=d,
    )


def _oom(d: Mapping[str, Any], schema: int) -> OomRecord:
    g = d.get
    message = _text(g("message"), "message")
    if message != g("message", ""):
        d = {**d, "message": message}
    return OomRecord(
        schema=schema,
        rank=_opt_int(g("rank"), "rank"),
        time=_time(g("time"), "time"),
        message=message,
        requested_bytes=_opt_int(g("requested_bytes"), "requested_bytes"),
        step=_opt_int(g("step"), "step"),
        device=_str(g("device"), "device", 64),
        categories=_categories(g("categories")),
        allocated=_opt_int(g("allocated"), "allocated"),
        reserved=_opt_int(g("reserved"), "reserved"),
        device_free=_opt_int(g("device_free"), "device_free"),
        large_tensors=_large_tensors(g("large_tensors")),
        doc=d,
    )


def _warning(d: Mapping[str, Any], schema: int) -> WarningRecord:
    g = d.get
    message = _text(g("message"), "message")
    if message != g("message", ""):
        d = {**d, "message": message}
    disabled = g("disabled", False)
    if not isinstance(disabled, bool):
        raise Bad("disabled: not a boolean")
    return WarningRecord(
        schema=schema,
        rank=_opt_int(g("rank"), "rank"),
        time=_time(g("time"), "time"),
        message=message,
        source=_str(g("source"), "source", 64),
        disabled=disabled,
        doc=d,
    )


def _exit(d: Mapping[str, Any], schema: int) -> ExitRecord:
    g = d.get
    return ExitRecord(
        schema=schema,
        rank=_opt_int(g("rank"), "rank"),
        time=_time(g("time"), "time"),
        reason=_str(g("reason"), "reason", 64),
        exception=_str(g("exception"), "exception", 256),
        steps=_opt_int(g("steps"), "steps"),
        pid=_opt_int(g("pid"), "pid"),
        hook_cpu_seconds=_seconds(g("hook_cpu_seconds"), "hook_cpu_seconds"),
        doc=d,
    )


_BUILDERS: Final[dict[str, Callable[[Mapping[str, Any], int], Record]]] = {
    "step": _step,
    "stage": _stage,
    "oom": _oom,
    "warning": _warning,
    "exit": _exit,
}
assert set(_BUILDERS) == set(RECORD_CLASSES)

_KNOWN_KEYS: Final[dict[str, frozenset[str]]] = {
    kind: _COMMON | {f for f in cls.__dataclass_fields__ if f != "doc"} for kind, cls in RECORD_CLASSES.items()
}


def decode_object(obj: Any) -> Record | Skip:
    """An already-parsed JSON value -> a typed record, or the reason it is not one."""
    if not isinstance(obj, dict):
        return Skip("not_object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        return Skip("not_object")
    build = _BUILDERS.get(kind)
    if build is None:
        return Skip("unknown_type", kind[:64])
    schema = obj.get("schema", 1)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        return Skip("bad_value", "schema: not a positive integer")
    if schema > SCHEMA_VERSION:
        return Skip("newer_schema", str(schema)[:20])
    known = _KNOWN_KEYS[kind]
    for k, v in obj.items():  # keys this memtop does not know: kept, but bounded like the rest
        if k not in known and (len(k) > MAX_STR or not _depth_ok(v, MAX_DEPTH - 1)):
            return Skip("too_deep", k[:64])
    try:
        return build(obj, schema)
    except Bad as exc:
        return Skip("bad_value", str(exc))


def decode_line(line: bytes | str) -> Record | Skip:
    """One line of a rank file -> a typed record, or a :class:`Skip` with the reason.

    A blank line gives ``Skip("blank")``, which readers do not count.
    """
    if len(line) > MAX_LINE:
        return Skip("too_long")
    try:
        obj = json.loads(line)  # bytes are decoded as UTF-8 by json itself
    except RecursionError:
        return Skip("too_deep")
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, ints over Python's digit limit
        if not line.strip():
            return Skip("blank")
        return Skip("bad_json", str(exc)[:100])
    # A record of this format opens a few dozen objects and lists; only a line with many more can
    # nest deeply inside a known key (which the typed fields would not notice): walk it then.
    opens = line.count(b"[") + line.count(b"{") if isinstance(line, bytes) else line.count("[") + line.count("{")
    if opens > _WALK_OVER and not _depth_ok(obj):
        return Skip("too_deep")
    return decode_object(obj)


# ------------------------------------------------------------------------------ meta.json


def _command(v: Any) -> tuple[str, ...]:
    items = _list(v, "command")
    return tuple(_str(a, "command[]") or "" for a in items)


def _cwd(v: Any) -> str | None:
    cwd = _str(v, "cwd")
    if cwd is not None and (len(cwd) > MAX_PATH or any(len(part) > MAX_PATH_PART for part in cwd.split("/")) or "\0" in cwd):
        raise Bad("cwd: not a usable path")
    return cwd


def _devices(v: Any) -> tuple[Device, ...]:
    out: list[Device] = []
    for d in _list(v, "devices"):
        dd = _obj(d, "devices[]")
        kind = dd.get("kind")
        out.append(
            Device(
                index=_opt_int(dd.get("index"), "devices[].index"),
                name=_str(dd.get("name"), "devices[].name", 256),
                total_bytes=_opt_int(dd.get("total_bytes"), "devices[].total_bytes"),
                kind=kind if kind in ("cuda", "cpu") else "unknown",
            )
        )
    return tuple(out)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool) or (isinstance(v, str) and len(v) <= MAX_STR) or (isinstance(v, (int, float)) and abs(v) <= MAX_INT and math.isfinite(v))


def _flag_entry(e: Any) -> dict[str, Any] | None:
    """One detected flag, normalized: ``flag`` a string, ``kind`` a string, ``aliases`` a list of
    strings; other values scalars or lists of scalars (dropped otherwise). None: not a flag."""
    if not isinstance(e, dict) or len(e) > 64:
        return None
    flag = e.get("flag")
    if not isinstance(flag, str) or not flag or len(flag) > 256:
        return None
    out: dict[str, Any] = {}
    for k, v in e.items():
        if not isinstance(k, str) or len(k) > 64:
            continue
        if _scalar(v) or (isinstance(v, list) and len(v) <= 1024 and all(_scalar(x) for x in v)):
            out[k] = v
    out["kind"] = out["kind"] if isinstance(out.get("kind"), str) else "str"
    aliases = out.get("aliases")
    out["aliases"] = [a for a in aliases if isinstance(a, str)] if isinstance(aliases, list) else []
    return out


def _flags(v: Any) -> tuple[Mapping[str, Any], ...] | None:
    """meta.json's detected flags; entries that are not flags are left out."""
    if v is None:
        return None
    return tuple(f for e in _list(v, "detected_flags") if (f := _flag_entry(e)) is not None)


_META_FIELDS: Final[dict[str, Callable[[Any], Any]]] = {
    "schema": lambda v: _opt_int(v, "schema"),
    "run_id": lambda v: _str(v, "run_id", 256),
    "command": _command,
    "cwd": _cwd,
    "started_at": lambda v: _time(v, "started_at"),
    "ended_at": lambda v: _time(v, "ended_at"),
    "exit_code": lambda v: _signed(v, "exit_code"),
    "status": lambda v: _str(v, "status", 64),
    "signal": lambda v: _signed(v, "signal"),
    "memtop_version": lambda v: _str(v, "memtop_version", 64),
    "torch_version": lambda v: _str(v, "torch_version", 64),
    "python_version": lambda v: _str(v, "python_version", 64),
    "host": lambda v: _str(v, "host", 256),
    "pid": lambda v: _opt_int(v, "pid"),
    "devices": _devices,
    "detected_flags": _flags,
    "max_steps": lambda v: _opt_int(v, "max_steps"),
}


def sanitize_meta(obj: Any) -> tuple[dict[str, Any], list[str]] | None:
    """meta.json's JSON value -> (the same dict with every bad or unbounded value set to None or
    left out, the names of those keys); None when it is not an object. Unknown keys are kept when
    they are bounded."""
    if not isinstance(obj, dict):
        return None
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for k, v in obj.items():
        if len(k) > MAX_STR:
            dropped.append(k[:64])
            continue
        check = _META_FIELDS.get(k)
        if check is None:
            if _depth_ok(v, 8):
                out[k] = v
            else:
                dropped.append(k[:64])
            continue
        try:
            value = check(v)
        except Bad:
            out[k] = None
            dropped.append(k)
            continue
        out[k] = [dict(e) for e in value] if k == "detected_flags" and value is not None else v
    return out, dropped


def meta_from_dict(doc: Mapping[str, Any], dropped: tuple[str, ...] = ()) -> RunMeta:
    """A sanitized meta dict (see :func:`sanitize_meta`) -> :class:`RunMeta`."""
    values = {k: check(doc[k]) for k, check in _META_FIELDS.items() if k in doc}
    return RunMeta(**values, dropped=dropped, doc=doc)


def decode_meta(text: bytes | str) -> RunMeta | Skip:
    """meta.json's bytes -> :class:`RunMeta` (bad fields dropped), or why the file is unusable."""
    if len(text) > MAX_META:
        return Skip("too_long")
    try:
        obj = json.loads(text)
    except RecursionError:
        return Skip("too_deep")
    except ValueError as exc:
        return Skip("bad_json", str(exc)[:100])
    got = sanitize_meta(obj)
    if got is None:
        return Skip("not_object")
    doc, dropped = got
    return meta_from_dict(doc, tuple(dropped))
