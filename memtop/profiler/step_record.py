"""The step record's dict, built from the step's moments at the least cost per step.

Between measured steps the per-tensor figures are carried, so on most steps the moments are the
same composition objects as the step before: their parts of the record (categories, moments,
high-water marks, large tensors) are then the same dict and list objects as last time rather
than new ones. A part handed to the writer is never changed afterwards (the TensorBoard writer
reads records on its own thread); a part whose figures changed is built anew. A step whose
moments were all those carried compositions and whose allocator figures (CUDA; a CPU has none)
are the last record's :meth:`repeats <StepRecordBuilder.repeat_of>` it: a copy with its own
time, step, step time and device figures (on CUDA, a training whose tensors have the same shapes
every step allocates the same bytes at the same moments: its steps between measured ones repeat
too).
"""

from __future__ import annotations

from typing import Any

from memtop.profiler.accounting import TensorInfo
from memtop.profiler.backends import AllocatorState
from memtop.profiler.moments import Composition, StepMoments, moment_record
from memtop.runs import format as fmt


class StepRecordBuilder:
    def __init__(self, max_large_tensors: int) -> None:
        self.max_large_tensors = max_large_tensors
        self._last_large: tuple[list[TensorInfo], list[dict[str, object]]] = ([], [])
        self._large_sources: tuple[list[TensorInfo], ...] = ()  # the lists _last_large was made from
        self._large_sizes: tuple[int, ...] = ()
        self._large_comp: Composition | None = None
        # the last record's parts, and what they were made from
        self._moments_key: tuple[Composition, ...] = ()
        self._moments_rec: dict[str, dict[str, int | None]] = {}
        self._highwater: list[int] = []
        self._highwater_rec: dict[str, int] = {}
        self._cats_key: tuple[Composition | None, int | None] = (None, None)
        self._cats: dict[str, int | None] = {}
        self.overcount: tuple[int, int] | None = None  # (tracked, peak) when the tracked tensors exceeded the peak
        # the last record, and what it was made of, where a record equal to it but for the time,
        # the step and the device figures may follow (a CPU step between measured steps)
        self._last: dict[str, Any] | None = None
        self._last_key: tuple[Any, ...] = ()
        self._last_allocator: tuple[int | None, AllocatorState] = (None, AllocatorState(None, None, None))  # its peak and allocator state

    def large_tensors(self, comp: Composition) -> list[dict[str, object]]:
        """The largest tensors, largest first; the same list object as last step when unchanged
        (the record writer then reuses its serialized form)."""
        if comp is self._large_comp:
            return self._last_large[1]  # a carried composition: its parts are complete, never appended to
        self._large_comp = comp
        sources = (comp.parameters.large, comp.gradients.large, comp.optimizer_state.large, comp.activations.large)
        seen = self._large_sources
        if len(seen) == 4 and all(a is b for a, b in zip(sources, seen, strict=True)) and self._large_sizes == tuple(map(len, sources)):
            return self._last_large[1]  # the same lists as last step, unchanged (figures carried between measured steps)
        self._large_sources, self._large_sizes = sources, tuple(map(len, sources))
        items: list[TensorInfo] = []
        for large in sources:
            items.extend(large)
        items.sort(key=lambda t: t.bytes, reverse=True)
        top = items[: self.max_large_tensors]
        if top != self._last_large[0]:
            self._last_large = (top, [t.as_record() for t in top])
        return self._last_large[1]

    def _categories(self, comp: Composition, tracked: int, peak: int | None) -> dict[str, int | None]:
        if self._cats_key[0] is comp and self._cats_key[1] == peak:
            return self._cats
        other = None
        self.overcount = None
        if peak is not None:
            if tracked > peak:
                self.overcount = (tracked, peak)
            other = max(0, peak - tracked)
        self._cats = {
            "parameters": comp.parameters.bytes,
            "gradients": comp.gradients.bytes,
            "optimizer_state": comp.optimizer_state.bytes,
            "activations": comp.activations.bytes,
            "other": other,
        }
        self._cats_key = (comp, peak)
        return self._cats

    def _moments(self, moments: dict[str, Composition]) -> dict[str, dict[str, int | None]]:
        key = tuple(moments.values())
        last = self._moments_key
        if len(key) == len(last) and all(a is b for a, b in zip(key, last, strict=True)):
            return self._moments_rec  # the same compositions: carried, unchanged since they were made
        self._moments_key = key
        self._moments_rec = {point: moment_record(c) for point, c in moments.items()}
        return self._moments_rec

    def _highwater_of(self, state: StepMoments) -> dict[str, int]:
        if state.highwater != self._highwater:
            self._highwater = list(state.highwater)
            self._highwater_rec = state.highwater_record()
        return self._highwater_rec

    def build(
        self,
        *,
        rank: int,
        now: float,
        step: int,
        device: str,
        step_time: float | None,
        alloc: AllocatorState,
        peak: int | None,
        state: StepMoments,
        activations_step: int | None,
        measured_step: int | None,
        device_used: int | None,
        device_total: int | None,
        sample_every: int,
        comps: tuple[Composition, ...] | None = None,
    ) -> dict[str, Any]:
        """The record; ``comps``: the step's compositions, in the order considered (a later step
        made of the same ones, carried, may then be a repeat of it, :meth:`repeat_of`)."""
        comp = state.best
        assert comp is not None
        tracked = comp.tracked
        allocated, reserved = alloc.allocated, alloc.reserved
        frag_bytes = frag_pct = None
        if allocated is not None and reserved is not None:
            frag_bytes = reserved - allocated
            frag_pct = (100.0 * frag_bytes / reserved) if reserved else 0.0
        # one literal in the key order of the record format (the record writer's fast path expects it)
        rec = {
            "type": "step",
            "schema": fmt.SCHEMA_VERSION,
            "rank": rank,
            "time": now,
            "step": step,
            "device": device,
            "step_time": step_time,
            "allocated": allocated,
            "reserved": reserved,
            "peak": peak,
            "categories": self._categories(comp, tracked, peak),
            "peak_point": comp.point,
            "activations_step": activations_step,
            "measured_step": measured_step,
            "tracked": tracked,
            "fragmentation_bytes": frag_bytes,
            "fragmentation_pct": frag_pct,
            "inactive_split_bytes": alloc.inactive_split,
            "device_used": device_used,
            "device_total": device_total,
            "large_tensors": self.large_tensors(comp),
            "moments": self._moments(state.moments),
            "highwater": self._highwater_of(state),
            "sample_every": sample_every,
        }
        self._last = rec if comps is not None else None
        self._last_key = (comps, rank, device, activations_step, measured_step, sample_every)
        self._last_allocator = (peak, alloc)
        return rec

    def repeatable(self) -> tuple[Composition, ...] | None:
        """The last record's compositions, where a step made of the same ones may repeat it."""
        if self._last is None:
            return None
        comps: tuple[Composition, ...] | None = self._last_key[0]
        return comps

    def repeat_of_planned(
        self, n: int, activations_step: int | None, measured_step: int | None, sample_every: int, device_total: int | None, peak: int | None, alloc: AllocatorState
    ) -> dict[str, Any] | None:
        """:meth:`repeat_of` for a steady step (:mod:`memtop.profiler.steady`): its ``n``
        compositions were the plan's, forward ends then the optimizer step's, the shape of the last
        record's (the plan was made from them), on the same rank and device; so only their count,
        the per-step figures of the key, the allocator's figures and the device's total are compared."""
        last = self._last
        if last is None:
            return None
        key = self._last_key
        if len(key[0]) != n or key[3] != activations_step or key[4] != measured_step or key[5] != sample_every or last["device_total"] != device_total:
            return None
        return last if self._same_allocator(peak, alloc) else None

    def _same_allocator(self, peak: int | None, alloc: AllocatorState) -> bool:
        """The allocator's figures of the last record (on a CPU: none, the same object every step)."""
        last_peak, last_alloc = self._last_allocator
        return peak == last_peak and (alloc is last_alloc or alloc == last_alloc)

    def repeat_of(
        self,
        carried: tuple[Composition, ...],
        rank: int,
        device: str,
        alloc: AllocatorState,
        peak: int | None,
        activations_step: int | None,
        measured_step: int | None,
        sample_every: int,
    ) -> dict[str, Any] | None:
        """The last record, where this step's record is a copy of it but for the time, step,
        step time and device figures: this step's moments were the same compositions as that
        record's, carried, and the allocator's figures (CUDA: the step's peak, allocated, reserved
        and inactive split bytes; a CPU has none) are the same; else None. Never changed: the
        writer copies it (:func:`memtop.profiler.writers.repeat_record`) or writes its line with
        the four figures replaced (:meth:`RankFileWriter.put_repeat`)."""
        last = self._last
        if last is None or (carried, rank, device, activations_step, measured_step, sample_every) != self._last_key:
            return None
        return last if self._same_allocator(peak, alloc) else None
