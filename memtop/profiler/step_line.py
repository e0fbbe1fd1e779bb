"""The step record's JSON line, built from a template: the same bytes ``json`` writes, for less.

A step record is written every step, so its serialization is part of the hook's per-step budget.
Its shape is fixed (the keys of :data:`STEP_KEYS` in that order, nested dicts of fixed keys,
numbers or None as values, a few short strings), so the line is a ``%`` template, made once per
shape, filled with the record's numbers. Anything else (a key added, moved or missing, a value
of another type, a float that is not finite) is not this shape: :meth:`StepLineEncoder.encode`
returns None and the caller falls back to the general encoder, so the output is always what
``json`` would write. The segments that change only on measured steps are reused while their
values (and the values' types) are unchanged. Measured in a hot loop on a loaded 2-core VM: 14-17
us a record against 20-24 us for ``json`` (docs/performance.md).
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any

from memtop.runs.records import Categories, Highwater, Moment

STEP_KEYS = (
    "type",
    "schema",
    "rank",
    "time",
    "step",
    "device",
    "step_time",
    "allocated",
    "reserved",
    "peak",
    "categories",
    "peak_point",
    "activations_step",
    "measured_step",
    "tracked",
    "fragmentation_bytes",
    "fragmentation_pct",
    "inactive_split_bytes",
    "device_used",
    "device_total",
    "large_tensors",
    "moments",
    "highwater",
    "sample_every",
)
# the nested objects' keys come from the typed record model (memtop/runs/records.py), spelled once
CATEGORY_KEYS: tuple[str, ...] = Categories._fields
MOMENT_KEYS: tuple[str, ...] = Moment._fields
HIGHWATER_KEYS: tuple[str, ...] = Highwater._fields

# the record's numbers in key order, in C: [schema … peak], then (after the categories) [activations_step … device_total]
_HEAD_NUMBERS = itemgetter("schema", "rank", "time", "step", "step_time", "allocated", "reserved", "peak")
_MID_NUMBERS = itemgetter(
    "activations_step", "measured_step", "tracked", "fragmentation_bytes", "fragmentation_pct", "inactive_split_bytes", "device_used", "device_total"
)
_NUMBER_TYPES = frozenset({int, float, type(None)})  # not bool: %s writes True, json writes true
_STRING_KEYS = frozenset({"type", "device", "peak_point"})
# What `%s` writes that json does not: None (null), and the non-finite floats json refuses.
# No key and no number json writes contains these, so finding one in a filled line means a fallback.
_NOT_JSON = ("None", "inf", "nan")


def _dict_template(keys: tuple[str, ...]) -> str:
    return "{" + ",".join(f'"{k}":%s' for k in keys) + "}"


def _template(kind: str, device: str, point: str, moment_names: tuple[str, ...], large: bool) -> str | None:
    parts = []
    for key in STEP_KEYS:
        if key in _STRING_KEYS:
            value = encode_basestring_ascii({"type": kind, "device": device, "peak_point": point}[key])
        elif key == "categories":
            value = _dict_template(CATEGORY_KEYS)
        elif key == "moments":
            value = "{" + ",".join(f"{encode_basestring_ascii(n)}:{_dict_template(MOMENT_KEYS)}" for n in moment_names) + "}"
        elif key == "highwater":
            value = _dict_template(HIGHWATER_KEYS)
        elif key == "large_tensors":
            if large:
                continue  # the general encoder writes a non-empty list last
            value = "[]"
        else:
            value = "%s"
        parts.append(f'"{key}":{value}')
    text = "{" + ",".join(parts) + (',"large_tensors":' if large else "}")
    # a string that holds a marker, or a `%`, would be misread: such a shape takes the general encoder
    fixed = text.replace("%s", "")
    if "%" in fixed or any(marker in fixed for marker in _NOT_JSON):
        return None
    return text


class StepLineEncoder:
    """Step records to JSON lines; the parts that did not change since the last record (on a CPU
    run, everything but the time, the step and the resident set size) are not formatted again."""

    def __init__(self) -> None:
        self._shape: tuple[object, ...] | None = None
        self._segments: list[str] = []  # the template cut into the segments of _CUTS
        self._tail = ""
        self._cached: dict[int, tuple[tuple[Any, ...], tuple[type, ...], str]] = {}

    def _set_shape(self, shape: tuple[Any, ...]) -> bool:
        kind, device, point, names, large = shape
        if not all(type(s) is str for s in (kind, device, point, *names)):
            return False
        template = _template(kind, device, point, names, large)
        if template is None:
            return False
        pieces = template.split("%s")
        n = len(pieces) - 1
        cuts = [0, *_CUTS, n]
        self._segments = ["".join(p + "%s" for p in pieces[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
        self._tail = pieces[n]
        self._shape = shape
        self._cached = {}
        return True

    @staticmethod
    def flatten(rec: dict[str, Any], large_json: str) -> Flat | None:
        """The record's numbers in key order and its shape (the strings and the moments' names),
        or None when ``rec`` is not a step record of the fixed shape."""
        if tuple(rec) != STEP_KEYS:
            return None
        cats, moments, hw = rec["categories"], rec["moments"], rec["highwater"]
        if type(cats) is not dict or type(moments) is not dict or type(hw) is not dict:
            return None
        if tuple(cats) != CATEGORY_KEYS or tuple(hw) != HIGHWATER_KEYS:
            return None
        moment_values: list[Any] = []
        for m in moments.values():
            if type(m) is not dict or tuple(m) != MOMENT_KEYS:
                return None
            moment_values += m.values()
        values = (*_HEAD_NUMBERS(rec), *cats.values(), *_MID_NUMBERS(rec), *moment_values, *hw.values(), rec["sample_every"])
        types = tuple(map(type, values))
        if not _NUMBER_TYPES.issuperset(types):
            return None  # bools, numpy scalars, strings where numbers belong: the general encoder decides
        shape = (rec["type"], rec["device"], rec["peak_point"], tuple(moments), large_json != "[]")
        return values, types, shape

    def encode(self, rec: dict[str, Any], large_json: str) -> str | None:
        """The record as one compact JSON object (no newline), with ``large_json`` (already
        serialized) as its ``large_tensors``, placed last when non-empty as the general encoder
        places it; or None when ``rec`` is not a step record of the fixed shape."""
        flat = self.flatten(rec, large_json)
        return None if flat is None else self.encode_flat(flat, large_json)

    def encode_flat(self, flat: Flat, large_json: str) -> str | None:
        """:meth:`encode` of a record already flattened by :meth:`flatten`."""
        values, types, shape = flat
        if shape != self._shape and not self._set_shape(shape):
            self._shape = None
            return None
        out = []
        cuts = (0, *_CUTS, len(values))
        cached = self._cached
        for i, segment in enumerate(self._segments):
            a, b = cuts[i], cuts[i + 1]
            part = values[a:b]
            hit = cached.get(i)
            # compared with their types: 1 == 1.0 == True, but json writes each differently
            if hit is not None and hit[0] == part and hit[1] == types[a:b]:
                out.append(hit[2])
                continue
            text = segment % part
            if "inf" in text or "nan" in text:
                return None  # a non-finite float: the general encoder refuses it (allow_nan=False)
            text = text.replace("None", "null")
            if i in _STEADY:
                cached[i] = (part, types[a:b], text)
            out.append(text)
        out.append(self._tail)
        if shape[4]:
            out.append(large_json)
            out.append("}")
        return "".join(out)


Flat = tuple[tuple[Any, ...], tuple[type, ...], tuple[Any, ...]]


# Where the values are cut into segments (indices into the flat tuple of numbers, in key order):
# [schema … peak], [categories … inactive_split_bytes], [device_used], [device_total … sample_every].
# The 2nd and 4th change only on measured steps on a CPU run, and are reused while unchanged.
_CUTS = (8, 19, 20)
_STEADY = frozenset({1, 3})
