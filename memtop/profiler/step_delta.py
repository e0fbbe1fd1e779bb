"""Run format v2's step lines: a full record now and then, and in between only what changed.

A *full* step record is the whole record (:mod:`memtop.profiler.step_line`). A *delta* carries
``"base": S`` (the ``step`` of the last full record of this file), the keys every step line has
(:data:`ALWAYS_KEYS`, which analysis scans and ``jq`` users read), and only those other keys whose
value differs from the base's. A reader rebuilds it as "the base's object, the delta's keys laid
over it, ``base`` dropped" (docs/run-format.md).

A full record is written for the first step record, after any record the fast path could not
take (another shape, extra keys: the general encoder wrote it), whenever the large-tensor list
changed, when the device, peak point or moment names changed, and for every step line
whose index in the file is a multiple of :data:`FULL_EVERY`, which bounds how far back a reader
looks for a base (and lets the analysis of a long run sample full records: memtop.analyzers.load).

Values are compared with their types (``1 == 1.0 == True``, but JSON writes each differently), so
a rebuilt record is exactly the record a writer of full records would have written.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from operator import is_not, itemgetter, ne
from typing import Any, Final

from memtop.profiler.step_line import CATEGORY_KEYS, HIGHWATER_KEYS, MOMENT_KEYS, Flat, StepLineEncoder

FULL_EVERY: Final = 256
BASE_KEY: Final = "base"
ALWAYS_KEYS: Final = ("type", "schema", "rank", "time", "step", "step_time", "allocated", "reserved", "peak", "tracked", "device_used")
# device_used is written every step: on a CPU it is the resident set size, which changes every
# step, and a delta whose other keys are all unchanged is then found by one comparison.

# A delta line: the always-written keys ("base" right after "schema", so a reader can tell a delta
# from a full record by the line's first bytes), then the changed groups, in the record's key order.
_HEAD = '{"type":"step","schema":%s,"base":%s,"rank":%s,"time":%s,"step":%s,"step_time":%s,"allocated":%s,"reserved":%s,"peak":%s,"tracked":%s,"device_used":%s'
_HEAD_AT = (0, 1, 2, 3, 4, 5, 6, 7, 15, 19)  # where the always-written numbers sit in the flat tuple (base: baked into the template)
_NO_PLAN: Final[Any] = object()
_REPEAT_AT: Final = (2, 3, 4, 19)  # what a repeated record changes: time, step, step_time, device_used
_MARK: Final = "\x00"  # where those four go in a repeat's line
_REPEAT_TYPES: Final = frozenset({int, float, type(None)})  # not bool (%s writes True)


def _dict_part(key: str, names: tuple[str, ...]) -> str:
    return f',"{key}":{{' + ",".join(f'"{n}":%s' for n in names) + "}"


def _moments_part(names: tuple[str, ...]) -> str:
    """All the moments, whole (a delta carries them when any of their figures changed: on CUDA
    the allocator's figure at a moment often moves a little from step to step)."""
    inner = "{" + ",".join(f'"{k}":%s' for k in MOMENT_KEYS) + "}"
    return ',"moments":{' + ",".join(f"{encode_basestring_ascii(n)}:{inner}" for n in names) + "}"


def _groups(names: tuple[str, ...]) -> tuple[tuple[int, int, str], ...]:
    """(start, end, template) of each delta-coded group of numbers in the flat tuple, in key order."""
    hw = 21 + 5 * len(names)
    return (
        (8, 13, _dict_part("categories", CATEGORY_KEYS)),
        (13, 14, ',"activations_step":%s'),
        (14, 15, ',"measured_step":%s'),
        (16, 17, ',"fragmentation_bytes":%s'),
        (17, 18, ',"fragmentation_pct":%s'),
        (18, 19, ',"inactive_split_bytes":%s'),
        (20, 21, ',"device_total":%s'),
        (21, hw, _moments_part(names)),
        (hw, hw + 4, _dict_part("highwater", HIGHWATER_KEYS)),
        (hw + 4, hw + 5, ',"sample_every":%s'),
    )


for _, _, _t in _groups(("forward_end", "optimizer_step")):  # a marker in a template would be mistaken for a non-finite number
    assert not any(m in _t for m in ("inf", "nan", "None"))
assert not any(m in _HEAD for m in ("inf", "nan", "None"))


def repeat_line(pieces: tuple[str, ...], time: object, step: object, step_time: object, device_used: object) -> str | None:
    """A repeat's line (newline included): the four numbers between the five ``pieces`` of
    :meth:`DeltaStepEncoder.repeat_pieces`, written as ``json`` writes them; None for a number
    ``json`` would write otherwise or refuse (a bool, an infinite or NaN float, another type)."""
    if type(time) is not float or type(step) is not int or type(step_time) not in _REPEAT_TYPES or type(device_used) not in _REPEAT_TYPES:
        return None
    # x - x is 0.0 for a finite float, nan for inf and nan (JSON has neither): the general path says
    if time - time or (type(step_time) is float and step_time - step_time) or (type(device_used) is float and device_used - device_used):
        return None
    a, b, c, d, e = pieces
    text = f"{a}{time}{b}{step}{c}{step_time}{d}{device_used}{e}\n"  # (str() of each: what %s and json write)
    return text.replace("None", "null") if step_time is None or device_used is None else text


class _Base:
    __slots__ = ("values", "types", "shape", "large", "step", "groups")

    def __init__(self, flat: Flat, large: str) -> None:
        self.values, self.types, self.shape = flat
        self.large = large
        self.step: int = self.values[3]
        self.groups = _groups(tuple(self.shape[3]))


class DeltaStepEncoder:
    """Step records -> full or delta lines (no newline); None where the fast path does not apply
    (the caller writes the record with the general encoder, which is a full record).

    Per delta: which numbers differ from the base (value or type) is one pass in C
    (``map(ne, ...)``); the template and the getter of the numbers it needs are made once per
    pattern of changes and base, so a steady run formats one short ``%`` template per step."""

    def __init__(self) -> None:
        self._full = StepLineEncoder()
        self._base: _Base | None = None
        self._plans: dict[bytes, tuple[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] | None] = {}
        # the last line's numbers and the plan it was written with (None: a full line), from which
        # the line of a record equal to it but for time, step, step_time and device_used is made
        self._last: tuple[tuple[Any, ...], tuple[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] | None] | None = None
        # that line's text around the four numbers (five pieces: joined by an f-string, ~5 us less
        # than a ``%`` template on a training thread whose caches the step evicted); () where the
        # line cannot be split so (the general path writes it)
        self._repeat: tuple[str, ...] | None = None

    def forget(self) -> None:
        """The next step record is written full (a new file, a failed write, a general-encoder line)."""
        self._base = None
        self._last = self._repeat = None

    def repeat_pieces(self, index: int) -> tuple[str, ...] | None:
        """The text of the last encoded record's line around its time, step, step time and
        device_used (five pieces: :func:`repeat_line` puts the four numbers between them), where
        step line ``index`` may be a repeat of it written so: a delta, exactly the line
        :meth:`encode` would write for that record with those four numbers; None where
        :meth:`encode` must decide (a full record is due, the last line is not known).

        The other numbers of a delta line are those of the base and of the changed groups, the
        same for the record and its repeat, so the line is the text around them, made once."""
        if not index % FULL_EVERY or self._base is None:
            return None
        pieces = self._repeat
        if pieces is None:
            last = self._last
            if last is None:
                return None
            values, plan = last
            if plan is None:  # the last line was full: its repeat is a delta with nothing changed
                plan = self._plans.get(b"", _NO_PLAN)
                if plan is _NO_PLAN:
                    plan = self._plans[b""] = self._plan(b"", len(values), self._base)
                if plan is None:
                    return None
            marked = list(values)
            for at in _REPEAT_AT:
                marked[at] = _MARK  # (JSON text holds no raw NUL: json writes it \u0000)
            pieces = tuple((plan[0] % plan[1](tuple(marked))).replace("None", "null").split(_MARK))
            self._repeat = pieces = pieces if len(pieces) == len(_REPEAT_AT) + 1 else ()
        return pieces or None

    def encode(self, rec: dict[str, Any], large_json: str, index: int) -> str | None:
        """``index``: the step line's index in its file (step lines before it)."""
        flat = StepLineEncoder.flatten(rec, large_json)
        if flat is None:
            self._base = None
            return None
        values, types, shape = flat
        base = self._base
        if base is not None and index % FULL_EVERY and shape == base.shape and large_json == base.large:
            bv, bt = base.values, base.types
            if values[8:15] == bv[8:15] and values[16:19] == bv[16:19] and values[20:] == bv[20:] and types[8:] == bt[8:]:
                diff = b""  # the usual step: no delta-coded number changed
            else:
                diff = bytes(map(ne, values[8:], bv[8:])) + bytes(map(is_not, types[8:], bt[8:]))  # hashed fast
            plan = self._plans.get(diff, _NO_PLAN)
            if plan is _NO_PLAN:
                plan = self._plans[diff] = self._plan(diff, len(values), base)
            if plan is not None:
                template, take = plan
                text: str = template % take(values)
                if "inf" not in text and "nan" not in text:  # a non-finite float: the general encoder refuses it
                    self._last, self._repeat = (values, plan), None
                    return text.replace("None", "null")
        line = self._full.encode_flat(flat, large_json)
        if line is None or type(values[3]) is not int:
            self._base = None
            self._last = self._repeat = None
        else:
            self._base = _Base(flat, large_json)
            self._plans = {}
            self._last, self._repeat = (values, None), None
        return line

    def _plan(self, diff: bytes, n: int, base: _Base) -> tuple[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] | None:
        """The delta's template and the getter of its numbers for this pattern of changes."""
        m = n - 8  # diff: values[8:] differ, then types[8:] differ
        changed = [False] * 8 + ([bool(a or b) for a, b in zip(diff[:m], diff[m:], strict=True)] if diff else [False] * m)
        head = _HEAD.replace('"base":%s', f'"base":{base.step}', 1)
        parts, at = [head], list(_HEAD_AT)
        for start, end, template in base.groups:
            if any(changed[start:end]):
                parts.append(template)
                at.extend(range(start, end))
        parts.append("}")
        return "".join(parts), itemgetter(*at)
