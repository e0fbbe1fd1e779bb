"""Run format v2's step lines: a full record now and then, and in between only what changed.

A *full* step record is the whole record (:mod:`memtop.profiler.step_line`). A *delta* carries
``"base": S`` (the ``step`` of the last full record of this file), the keys every step line has
(:data:`ALWAYS_KEYS`, which analysis scans and ``jq`` users read), and only those other keys whose
value differs from the base's. A reader rebuilds it as "the base's object, the delta's keys laid
over it, ``base`` dropped" (docs/run-format.md).

A full record is written for the first step record, after any record the fast path could not
take (another shape, extra keys: the general encoder wrote it), whenever the large-tensor list or
the moments changed, when the device, peak point or moment names changed, and at least every
:data:`FULL_EVERY` step lines, which bounds how far back a reader looks for a base.

Values are compared with their types (``1 == 1.0 == True``, but JSON writes each differently), so
a rebuilt record is exactly the record a writer of full records would have written.
"""

from __future__ import annotations

from typing import Any, Final

from memtop.profiler.step_line import CATEGORY_KEYS, HIGHWATER_KEYS, Flat, StepLineEncoder

FULL_EVERY: Final = 256
BASE_KEY: Final = "base"
ALWAYS_KEYS: Final = ("type", "schema", "rank", "time", "step", "step_time", "allocated", "reserved", "peak", "tracked")

# A delta line: the always-written keys ("base" right after "schema", so a reader can tell a delta
# from a full record by the line's first bytes), then the changed groups, in the record's key order.
_HEAD = '{"type":"step","schema":%s,"base":%s,"rank":%s,"time":%s,"step":%s,"step_time":%s,"allocated":%s,"reserved":%s,"peak":%s,"tracked":%s'
_HEAD_AT = (0, 1, 2, 3, 4, 5, 6, 7, 15)  # where the always-written numbers sit in the flat tuple (base inserted after schema)


def _dict_part(key: str, names: tuple[str, ...]) -> str:
    return f',"{key}":{{' + ",".join(f'"{n}":%s' for n in names) + "}"


def _groups(n_moments: int) -> tuple[tuple[int, int, str], ...]:
    """(start, end, template) of each delta-coded group of numbers in the flat tuple, in key order."""
    hw = 21 + 5 * n_moments
    return (
        (8, 13, _dict_part("categories", CATEGORY_KEYS)),
        (13, 14, ',"activations_step":%s'),
        (14, 15, ',"measured_step":%s'),
        (16, 17, ',"fragmentation_bytes":%s'),
        (17, 18, ',"fragmentation_pct":%s'),
        (18, 19, ',"inactive_split_bytes":%s'),
        (19, 20, ',"device_used":%s'),
        (20, 21, ',"device_total":%s'),
        (hw, hw + 4, _dict_part("highwater", HIGHWATER_KEYS)),
        (hw + 4, hw + 5, ',"sample_every":%s'),
    )


for _, _, _t in _groups(0):  # a marker in a template would be mistaken for a non-finite number
    assert not any(m in _t for m in ("inf", "nan", "None"))
assert not any(m in _HEAD for m in ("inf", "nan", "None"))


class _Base:
    __slots__ = ("values", "types", "shape", "large", "step", "moments")

    def __init__(self, flat: Flat, large: str) -> None:
        self.values, self.types, self.shape = flat
        self.large = large
        self.step: int = self.values[3]
        self.moments = (21, 21 + 5 * len(self.shape[3]))


class DeltaStepEncoder:
    """Step records -> full or delta lines (no newline); None where the fast path does not apply
    (the caller writes the record with the general encoder, which is a full record)."""

    def __init__(self) -> None:
        self._full = StepLineEncoder()
        self._base: _Base | None = None
        self._since = 0  # step lines written since the base
        self._groups = _groups(0)
        self._templates: dict[tuple[int, ...], str] = {}

    def forget(self) -> None:
        """The next step record is written full (a new file, a failed write, a general-encoder line)."""
        self._base = None

    def encode(self, rec: dict[str, Any], large_json: str) -> str | None:
        flat = StepLineEncoder.flatten(rec, large_json)
        if flat is None:
            self._base = None
            return None
        values, types, shape = flat
        base = self._base
        if base is not None and self._since < FULL_EVERY and shape == base.shape and large_json == base.large:
            a, b = base.moments
            if values[a:b] == base.values[a:b] and types[a:b] == base.types[a:b]:
                line = self._delta(values, types, base)
                if line is not None:
                    self._since += 1
                    return line
        line = self._full.encode_flat(flat, large_json)
        if line is None or type(values[3]) is not int:
            self._base = None
        else:
            self._base = _Base(flat, large_json)
            self._since = 1
            if self._groups[-1][1] != len(values):
                self._groups, self._templates = _groups(len(shape[3])), {}
        return line

    def _delta(self, values: tuple[Any, ...], types: tuple[type, ...], base: _Base) -> str | None:
        bv, bt = base.values, base.types
        changed: list[int] = []
        args = [values[0], base.step, *(values[i] for i in _HEAD_AT[1:])]
        for g, (a, b, _) in enumerate(self._groups):
            if values[a:b] != bv[a:b] or types[a:b] != bt[a:b]:
                changed.append(g)
                args.extend(values[a:b])
        key = tuple(changed)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = _HEAD + "".join(self._groups[g][2] for g in key) + "}"
        text = template % tuple(args)
        if "inf" in text or "nan" in text:
            return None  # a non-finite float: the general encoder refuses it
        return text.replace("None", "null")
