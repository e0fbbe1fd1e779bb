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

Run format v2 writes most step records as deltas of the file's last full step record: a file is
read in order through :class:`StepRebuilder`, which rebuilds each delta (:func:`rebuild`) before
it is validated like any record; a delta whose base is missing is ``Skip("no_base")``
(docs/run-format.md, "Full records and deltas").

``meta.json`` is decoded the same way by :mod:`memtop.runs.meta_decode`, with the same checks
(:mod:`memtop.runs.checks`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from memtop.runs.checks import (
    MAX_DEPTH,
    MAX_INT,
    MAX_ITEMS,
    MAX_LINE,
    MAX_STR,
    Bad,
    count,
    depth_ok,
    opt_count,
    pct,
    seconds,
    short_str,
    text,
    unix_time,
)
from memtop.runs.format import CATEGORIES, HIGHWATER_CATEGORIES, SCHEMA_VERSION
from memtop.runs.records import (
    RECORD_CLASSES,
    Categories,
    ExitRecord,
    Highwater,
    LargeTensor,
    Moment,
    OomRecord,
    Record,
    StageRecord,
    StepRecord,
    WarningRecord,
)


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
    "no_base": "a step delta whose full record is missing or unreadable",
}


class SkipCounter(Counter[str]):
    """Skipped lines by reason."""

    def describe(self) -> str:
        """``"3 line(s) skipped: 2 not JSON (truncated or garbage), 1 longer than 1 MiB"``."""
        parts = [f"{n} {REASONS.get(reason, reason)}" for reason, n in self.most_common()]
        return f"{sum(self.values())} unreadable line(s) skipped: " + ", ".join(parts)


# The three below run for every decoded step (16 large tensors each): checks are inlined, and
# ``type(v) is int`` (not isinstance) also refuses bools.


def _check_counts(values: tuple[Any, ...], what: str) -> None:
    for v in values:
        if v is not None and (type(v) is not int or v < 0 or v > MAX_INT):
            raise Bad(f"{what}: not a byte count")


_CATEGORY_KEYS: Final = frozenset(CATEGORIES)
_HIGHWATER_KEYS: Final = frozenset(HIGHWATER_CATEGORIES)


def _categories(v: Any, what: str = "categories") -> Categories:
    if v is None:
        return _NO_CATEGORIES
    if type(v) is not dict:
        raise Bad(f"{what}: not an object")
    g = v.get
    values = (g("parameters"), g("gradients"), g("optimizer_state"), g("activations"), g("other"))
    _check_counts(values, what)
    if not v.keys() <= _CATEGORY_KEYS:  # a newer writer's extra category: a byte count like the rest
        if len(v) > 64 or any(len(k) > 64 for k in v):
            raise Bad(f"{what}: too many or too long keys")
        _check_counts(tuple(v.values()), what)
    return Categories(*values)


_MOMENT_KEYS: Final = ("allocated", "parameters", "gradients", "optimizer_state", "activations")
_MOMENT_KEY_SET: Final = frozenset(_MOMENT_KEYS)


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
        if not m.keys() <= _MOMENT_KEY_SET:
            if len(m) > 64 or any(len(k) > 64 for k in m):
                raise Bad("moments: too many or too long keys")
            _check_counts(tuple(m.values()), f"moments.{point}")
        out[point] = Moment(*values)
    return out


def _highwater(v: Any) -> Highwater | None:
    if v is None:
        return None
    if type(v) is not dict:
        raise Bad("highwater: not an object")
    g = v.get
    values = (g("parameters"), g("gradients"), g("optimizer_state"), g("activations"))
    _check_counts(values, "highwater")
    if not v.keys() <= _HIGHWATER_KEYS:  # a newer writer's extra category: a byte count like the rest
        if len(v) > 64 or any(len(k) > 64 for k in v):
            raise Bad("highwater: too many or too long keys")
        _check_counts(tuple(v.values()), "highwater")
    return Highwater(*values)


def _names(v: Any, what: str) -> tuple[str, ...] | None:
    """A list of class names (``model_kinds``, ``optimizer``): bounded strings, bounded count."""
    if v is None:
        return None
    if type(v) is not list or len(v) > 256 or any(type(x) is not str or len(x) > 256 for x in v):
        raise Bad(f"{what}: not a list of names")
    return tuple(v)


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
    "measured_step",
    "tracked",
    "fragmentation_bytes",
    "inactive_split_bytes",
    "device_used",
    "device_total",
    "sample_every",
    "model_kinds_more",
)


def _step(d: Mapping[str, Any], schema: int) -> StepRecord:
    g = d.get
    for k in _STEP_COUNTS:
        v = g(k)
        if v is not None and (type(v) is not int or v < 0 or v > MAX_INT):
            raise Bad(f"{k}: not a non-negative integer below 2**63")
    return StepRecord(
        step=count(g("step"), "step"),
        schema=schema,
        rank=g("rank"),
        time=unix_time(g("time"), "time"),
        device=short_str(g("device"), "device", 64),
        step_time=seconds(g("step_time"), "step_time"),
        allocated=g("allocated"),
        reserved=g("reserved"),
        peak=g("peak"),
        categories=_categories(g("categories")),
        peak_point=short_str(g("peak_point"), "peak_point", 64),
        activations_step=g("activations_step"),
        measured_step=g("measured_step"),
        tracked=g("tracked"),
        fragmentation_bytes=g("fragmentation_bytes"),
        fragmentation_pct=pct(g("fragmentation_pct"), "fragmentation_pct"),
        inactive_split_bytes=g("inactive_split_bytes"),
        device_used=g("device_used"),
        device_total=g("device_total"),
        large_tensors=_large_tensors(g("large_tensors")),
        moments=_moments(g("moments")),
        highwater=_highwater(g("highwater")),
        sample_every=g("sample_every"),
        model_kinds=_names(g("model_kinds"), "model_kinds"),
        model_kinds_more=g("model_kinds_more"),
        optimizer=_names(g("optimizer"), "optimizer"),
        doc=d,
    )


def _stage(d: Mapping[str, Any], schema: int) -> StageRecord:
    g = d.get
    name = short_str(g("name"), "name", 256)
    if not name:
        raise Bad("name: missing")
    return StageRecord(
        name=name,
        schema=schema,
        rank=opt_count(g("rank"), "rank"),
        time=unix_time(g("time"), "time"),
        step=opt_count(g("step"), "step"),
        duration=seconds(g("duration"), "duration"),
        before=opt_count(g("before"), "before"),
        after=opt_count(g("after"), "after"),
        peak=opt_count(g("peak"), "peak"),
        measure=short_str(g("measure"), "measure", 64),
        doc=d,
    )


def _oom(d: Mapping[str, Any], schema: int) -> OomRecord:
    g = d.get
    message = text(g("message"), "message")
    if message != g("message", ""):
        d = {**d, "message": message}
    return OomRecord(
        schema=schema,
        rank=opt_count(g("rank"), "rank"),
        time=unix_time(g("time"), "time"),
        message=message,
        requested_bytes=opt_count(g("requested_bytes"), "requested_bytes"),
        step=opt_count(g("step"), "step"),
        device=short_str(g("device"), "device", 64),
        categories=_categories(g("categories")),
        allocated=opt_count(g("allocated"), "allocated"),
        reserved=opt_count(g("reserved"), "reserved"),
        device_free=opt_count(g("device_free"), "device_free"),
        large_tensors=_large_tensors(g("large_tensors")),
        doc=d,
    )


def _warning(d: Mapping[str, Any], schema: int) -> WarningRecord:
    g = d.get
    message = text(g("message"), "message")
    if message != g("message", ""):
        d = {**d, "message": message}
    disabled = g("disabled", False)
    if not isinstance(disabled, bool):
        raise Bad("disabled: not a boolean")
    return WarningRecord(
        schema=schema,
        rank=opt_count(g("rank"), "rank"),
        time=unix_time(g("time"), "time"),
        message=message,
        source=short_str(g("source"), "source", 64),
        disabled=disabled,
        doc=d,
    )


def _exit(d: Mapping[str, Any], schema: int) -> ExitRecord:
    g = d.get
    return ExitRecord(
        schema=schema,
        rank=opt_count(g("rank"), "rank"),
        time=unix_time(g("time"), "time"),
        reason=short_str(g("reason"), "reason", 64),
        exception=short_str(g("exception"), "exception", 256),
        steps=opt_count(g("steps"), "steps"),
        pid=opt_count(g("pid"), "pid"),
        hook_cpu_seconds=seconds(g("hook_cpu_seconds"), "hook_cpu_seconds"),
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
    if DELTA_KEY in obj and kind == "step":
        return Skip("no_base", "a delta read without its base")  # rebuilt by StepRebuilder / rebuild()
    return _decode_known(obj, kind, build)


def _decode_known(obj: dict[str, Any], kind: str, build: Callable[[Mapping[str, Any], int], Record]) -> Record | Skip:
    schema = obj.get("schema", 1)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        return Skip("bad_value", "schema: not a positive integer")
    if schema > SCHEMA_VERSION:
        return Skip("newer_schema", str(schema)[:20])
    known = _KNOWN_KEYS[kind]
    for k, v in obj.items():  # keys this memtop does not know: kept, but bounded like the rest
        if k not in known and (len(k) > MAX_STR or not depth_ok(v, MAX_DEPTH - 1)):
            return Skip("too_deep", k[:64])
    try:
        return build(obj, schema)
    except Bad as exc:
        return Skip("bad_value", str(exc))


def decode_line(line: bytes | str) -> Record | Skip:
    """One line of a rank file -> a typed record, or a :class:`Skip` with the reason.

    A blank line gives ``Skip("blank")``, which readers do not count. A step delta (run format
    v2) cannot be read alone: it gives ``Skip("no_base")``; read a file with :class:`StepRebuilder`.
    """
    got = parse_line(line)
    return got if isinstance(got, Skip) else decode_object(got)


def parse_line(line: bytes | str) -> Any:
    """The line's JSON value, with the checks of :func:`decode_line` (length, nesting), or a Skip."""
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
    if opens > _WALK_OVER and not depth_ok(obj):
        return Skip("too_deep")
    return obj


# ------------------------------------------------------------------------------ step deltas (v2)

DELTA_KEY: Final = "base"
# The first bytes of the hook's step lines: a full record has "rank" right after "schema", a
# delta has "base" there (memtop.profiler.step_delta). docs/run-format.md, "Rebuilding a step".
FULL_HEAD: Final = re.compile(rb'\{"type":"step","schema":(\d{1,9}),"rank":')
DELTA_HEAD: Final = re.compile(rb'\{"type":"step","schema":(\d{1,9}),"base":')


def rebuild(base: StepRecord | None, delta: dict[str, Any]) -> Record | Skip:
    """A delta laid over its base: the base's JSON object, the delta's keys over it, ``base`` dropped.

    ``base`` is the nearest full step record before the delta in its file (None if that line did
    not decode); a delta that names another step, or another schema, is ``Skip("no_base")``.
    """
    step = delta.get(DELTA_KEY)
    if base is None or type(step) is not int or step != base.step or delta.get("schema") != base.schema:
        return Skip("no_base", f"base {str(step)[:20]}")
    full = {**base.doc, **delta}
    del full[DELTA_KEY]
    return _decode_known(full, "step", _step)


def decode_delta_line(line: bytes, base: StepRecord | None) -> Record | Skip:
    """One delta line (:data:`DELTA_HEAD`) rebuilt over ``base``."""
    obj = parse_line(line)
    if isinstance(obj, Skip):
        return obj
    if not isinstance(obj, dict) or obj.get("type") != "step":
        return Skip("not_object")
    return rebuild(base, obj)


class StepRebuilder:
    """The one way to read a rank file's lines in order: each line becomes a record or a skip, and
    step deltas are rebuilt over the file's last full step record (one rebuilder per file; call
    :meth:`reset` when the file is read again from its start)."""

    __slots__ = ("_base",)

    def __init__(self) -> None:
        self._base: StepRecord | None = None

    def reset(self) -> None:
        self._base = None

    def decode(self, line: bytes) -> Record | Skip:
        if line[:16] == b'{"type":"step","':
            if FULL_HEAD.match(line) is not None:
                got = decode_line(line)
                self._base = got if isinstance(got, StepRecord) else None
                return got
            if DELTA_HEAD.match(line) is not None:
                return decode_delta_line(line, self._base)
        return decode_line(line)
