"""The typed run-record model: every key of the run format (docs/run-format.md) spelled once.

Readers never see raw JSON: :mod:`memtop.runs.decode` turns each line of a rank file into one of
the records below (or a counted skip), and ``meta.json`` into a :class:`RunMeta`. Every value has
been validated there (byte counts are non-negative integers, floats are finite, strings bounded),
so code holding a record trusts its attributes.

Frozen dataclasses with slots rather than msgspec Structs: the hook and the GPU machines must not
need another dependency, and the analysis path decodes only a few hundred records (see
docs/performance.md, "Record decoding", for the measurement behind the choice).

Readers use the attributes only. ``as_json()`` gives the validated JSON object back, for the few
places that must show a record as it was written (the GPU validation's raw checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, NamedTuple

from memtop.runs.flag_entry import FlagEntry
from memtop.runs.format import CATEGORIES


class _Doc:
    """The validated JSON object a record was decoded from, for showing it as written."""

    __slots__ = ()
    doc: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The record as the JSON object it was read from (validated; unknown keys kept)."""
        return dict(self.doc)


class Categories(NamedTuple):
    """Bytes per category at the step's peak; ``None`` where not measured (``other`` on CPU).

    Named tuples (not dataclasses) for the small parts of a record: a step holds up to 16 large
    tensors, and a tuple is built several times faster, which the decode step notices."""

    parameters: int | None = None
    gradients: int | None = None
    optimizer_state: int | None = None
    activations: int | None = None
    other: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return dict(zip(CATEGORIES, self, strict=True))

    def tracked(self) -> int:
        """parameters + gradients + optimizer_state + activations (missing ones count 0)."""
        return (self.parameters or 0) + (self.gradients or 0) + (self.optimizer_state or 0) + (self.activations or 0)


class Moment(NamedTuple):
    """One moment of a step the hook looked at (``forward_end`` or ``optimizer_step``)."""

    allocated: int | None = None
    parameters: int | None = None
    gradients: int | None = None
    optimizer_state: int | None = None
    activations: int | None = None


class Highwater(NamedTuple):
    """Each category's largest value over the moments of one step (``highwater``), next to the
    composition at the peak moment (``categories``); ``None`` where not written (older runs)."""

    parameters: int | None = None
    gradients: int | None = None
    optimizer_state: int | None = None
    activations: int | None = None


class LargeTensor(NamedTuple):
    name: str
    category: str
    bytes: int
    shape: tuple[int, ...] = ()
    dtype: str = "unknown"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "category": self.category, "bytes": self.bytes, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True, slots=True)
class StepRecord(_Doc):
    """``"type": "step"``: one optimizer step."""

    TYPE: ClassVar[str] = "step"
    step: int
    schema: int = 1
    rank: int | None = None
    time: float | None = None
    device: str | None = None
    step_time: float | None = None
    allocated: int | None = None
    reserved: int | None = None
    peak: int | None = None
    categories: Categories = Categories()
    peak_point: str | None = None  # one of PEAK_POINTS (a newer writer may add one: kept)
    activations_step: int | None = None
    measured_step: int | None = None
    tracked: int | None = None
    fragmentation_bytes: int | None = None
    fragmentation_pct: float | None = None
    inactive_split_bytes: int | None = None
    device_used: int | None = None
    device_total: int | None = None
    large_tensors: tuple[LargeTensor, ...] = ()
    moments: Mapping[str, Moment] = field(default_factory=dict, hash=False)
    highwater: Highwater | None = None
    sample_every: int | None = None
    model_kinds: tuple[str, ...] | None = None  # first step record only: module class names
    model_kinds_more: int | None = None
    optimizer: tuple[str, ...] | None = None  # first step record only: the class and its bases
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def type(self) -> str:
        return self.TYPE

    @property
    def has_large_tensors(self) -> bool:
        """Whether the record lists its large tensors (an empty list counts; a record without the
        key, written by hand or by an older writer, does not)."""
        return "large_tensors" in self.doc

    @property
    def level(self) -> int:
        """The step's memory level: the allocator peak where measured, else the tracked bytes."""
        if self.peak is not None:
            return self.peak
        return self.tracked if self.tracked is not None else self.categories.tracked()


@dataclass(frozen=True, slots=True)
class StageRecord(_Doc):
    """``"type": "stage"``: a user-marked pipeline stage."""

    TYPE: ClassVar[str] = "stage"
    name: str
    schema: int = 1
    rank: int | None = None
    time: float | None = None
    step: int | None = None
    duration: float | None = None
    before: int | None = None
    after: int | None = None
    peak: int | None = None
    measure: str | None = None
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def type(self) -> str:
        return self.TYPE


@dataclass(frozen=True, slots=True)
class OomRecord(_Doc):
    """``"type": "oom"``: written before an out-of-memory exception propagates."""

    TYPE: ClassVar[str] = "oom"
    schema: int = 1
    rank: int | None = None
    time: float | None = None
    message: str = ""
    requested_bytes: int | None = None
    step: int | None = None
    device: str | None = None
    categories: Categories = Categories()
    allocated: int | None = None
    reserved: int | None = None
    device_free: int | None = None
    large_tensors: tuple[LargeTensor, ...] = ()
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def type(self) -> str:
        return self.TYPE


@dataclass(frozen=True, slots=True)
class WarningRecord(_Doc):
    """``"type": "warning"``: a hook error (reported once; ``disabled`` if the hook turned off)."""

    TYPE: ClassVar[str] = "warning"
    schema: int = 1
    rank: int | None = None
    time: float | None = None
    message: str = ""
    source: str | None = None
    disabled: bool = False
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def type(self) -> str:
        return self.TYPE


@dataclass(frozen=True, slots=True)
class ExitRecord(_Doc):
    """``"type": "exit"``: written by the hook when its process ends."""

    TYPE: ClassVar[str] = "exit"
    schema: int = 1
    rank: int | None = None
    time: float | None = None
    reason: str | None = None
    exception: str | None = None
    steps: int | None = None
    pid: int | None = None
    hook_cpu_seconds: float | None = None
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def type(self) -> str:
        return self.TYPE


Record = StepRecord | StageRecord | OomRecord | WarningRecord | ExitRecord
RECORD_CLASSES: Final[dict[str, type[Record]]] = {c.TYPE: c for c in (StepRecord, StageRecord, OomRecord, WarningRecord, ExitRecord)}


@dataclass(frozen=True, slots=True)
class Device:
    """One entry of ``meta.json``'s ``devices``."""

    index: int | None = None
    name: str | None = None
    total_bytes: int | None = None
    kind: str = "unknown"  # "cuda", "cpu" or "unknown"


@dataclass(frozen=True, slots=True)
class RunMeta(_Doc):
    """``meta.json``. A field that fails validation reads as ``None`` (the rest of the file is kept;
    ``dropped`` names the fields that were dropped)."""

    schema: int | None = None
    run_id: str | None = None
    command: tuple[str, ...] = ()
    cwd: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    status: str | None = None
    signal: int | None = None
    memtop_version: str | None = None
    torch_version: str | None = None
    python_version: str | None = None
    host: str | None = None
    pid: int | None = None
    child_pid: int | None = None  # the training process `memtop train` launched
    devices: tuple[Device, ...] = ()
    detected_flags: tuple[FlagEntry, ...] | None = None  # as `memtop train` detected them at launch
    max_steps: int | None = None
    dropped: tuple[str, ...] = ()
    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
