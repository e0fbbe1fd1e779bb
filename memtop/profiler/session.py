"""One profiling session per process (rank): measures each step and writes its records.

The session is driven by events that :mod:`memtop.profiler.hooks` forwards from torch: the start
of every backward pass (the end of a forward pass) and the end of every optimizer step. It keeps
only weak references to models, optimizers and parameters.
"""

from __future__ import annotations

import math
import os
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from memtop.profiler import modelinfo, naming
from memtop.profiler.accounting import (
    CategoryTotal,
    GradSlot,
    ParamRegistry,
    TensorInfo,
    add_tensor,
    count_gradients,
    count_optimizer_state,
    grad_slots,
    optimizer_params,
)
from memtop.profiler.activations import backward_roots, saved_tensors_of_graph, sequence_nr
from memtop.profiler.backends import Backend, backend_for, peak_rss_bytes, rss_bytes
from memtop.profiler.config import HookConfig
from memtop.profiler.writers import RankFileWriter, TensorBoardWriter
from memtop.runs import format as fmt

PARAM_RECOUNT_EVERY = 200  # at least this many steps between periodic exact recounts (a safety net
RECOUNT_BUDGET = 0.001  # behind the change signals), and more where a recount would cost over 0.1% of step time


@dataclass
class Composition:
    """The categories at one moment of a step."""

    point: str
    allocated: int | None
    parameters: CategoryTotal
    gradients: CategoryTotal
    optimizer_state: CategoryTotal
    activations: CategoryTotal

    @property
    def tracked(self) -> int:
        return self.parameters.bytes + self.gradients.bytes + self.optimizer_state.bytes + self.activations.bytes

    def weight(self) -> int:
        return self.allocated if self.allocated is not None else self.tracked


CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations")
RESCAN_AT_MOST_EVERY = 100  # steps between scans of live objects (a script that makes an optimizer per step)
PRIMARY_SETTLES_AFTER = 8  # optimizer steps after which the optimizer that ends steps is fixed
BACKWARD_STEPS_AFTER = 2  # backward passes without an optimizer step before steps come from backward
BACKWARD_STEPS_WITH_OPTIMIZER = 64  # the same where an optimizer exists (gradient accumulation)
ADAPT_EVERY = 8  # steps between re-decisions of the sampling interval (and after every measured step)


@dataclass
class _StepState:
    best: Composition | None = None
    moments: dict[str, Composition] = field(default_factory=dict)
    highwater: dict[str, int] = field(default_factory=dict)
    walked: list[tuple[int, Composition]] = field(default_factory=list)  # (root sequence number, forward end)
    backward_calls: int = 0
    started: float = field(default_factory=time.perf_counter)


class Session:
    def __init__(self, config: HookConfig, run_dir: Path, rank: int | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.rank = config.rank if rank is None else rank
        self.disabled = False
        self.step = 0
        self.optimizer_steps_seen = 0
        self.params = ParamRegistry()
        self.models = naming.ModelRegistry()
        self._optimizers: list[tuple[str, weakref.ref[torch.optim.Optimizer]]] = []
        self._optimizer_refs: dict[int, weakref.ref[torch.optim.Optimizer]] = {}  # id -> ref: "watched already?" per step
        self._primary: int | None = None  # id() of the optimizer whose step ends a memtop step
        self._others_now: list[int] = []  # other optimizers that stepped since the primary's last step
        self._others_before: list[int] = []  # … and between its two steps before
        self._primary_settled = False
        self._names_resolved = False
        self._discovered = False
        self._rescan = True  # look for models among live objects at the next recount
        self._scanned_at: int | None = None  # the step of the last scan
        self._manual_steps_seen = 0
        self._backward_ends = 0  # outermost backward passes since the last optimizer or manual step
        self.backward_steps = False  # no optimizer steps: one step per backward pass
        self._state_signature: list[tuple[int, int, int]] = []
        self._static_checked = -1  # the step whose first moment compared the optimizers' shapes
        self._recount_every = PARAM_RECOUNT_EVERY
        self._recount_cost = 0.0  # CPU seconds of the last exact recount of parameters (and of state)
        self._state_recount_cost = 0.0
        self._device: torch.device | None = None
        self._device_str: str | None = None
        self._backend: Backend | None = None
        self._writer: RankFileWriter | None = None
        self._tb: TensorBoardWriter | None = None
        self._state = _StepState()
        self._last_record_time: float | None = None
        self._param_total: CategoryTotal | None = None
        self._param_total_step = -1
        self._state_cache: tuple[int, CategoryTotal] | None = None
        self._grad_slots: list[GradSlot] = []
        self._fwd_grads = CategoryTotal()
        self._last_large: tuple[list[TensorInfo], list[dict[str, object]]] = ([], [])
        self._large_sources: tuple[list[TensorInfo], ...] = ()  # the lists _last_large was made from
        self._large_sizes: tuple[int, ...] = ()
        self._act_bytes = 0
        self._act_large: list[TensorInfo] = []
        self._act_step: int | None = None
        self._act_cost = 0.0  # CPU seconds of a measured step's per-tensor work (typical)
        self._measure_cpu = 0.0  # … of this step so far
        self._decided_for = -1  # the step whose `_measure_this` is decided
        self._measure_this = True
        self._measured_step: int | None = None  # the last step that measured per-tensor figures
        self._end_grads = CategoryTotal()
        self._walk_costs: list[float] = []  # CPU seconds of the last measured steps' per-tensor work
        self._step_time_avg: float | None = None
        self._step_times: list[float] = []
        self.sample_every = 1
        self._last_oom_time = 0.0
        self._warned: set[str] = set()
        self.hook_cpu_seconds = 0.0  # CPU time of memtop's callbacks on the training thread
        self.exit_reason = "normal"
        self.exception_name: str | None = None
        self.closed = False

    # ------------------------------------------------------------------ set-up
    def watch_optimizer(self, opt: torch.optim.Optimizer, name: str | None = None) -> None:
        known = self._optimizer_refs.get(id(opt))
        if known is not None and known() is opt:
            return
        if any(r() is opt for _, r in self._optimizers):
            return
        taken = {n for n, _ in self._optimizers}
        base = name or "optimizer"
        label, i = base, 1
        while label in taken:
            i += 1
            label = f"{base}_{i}"
        ref = weakref.ref(opt)
        self._optimizers.append((label, ref))
        self._optimizer_refs[id(opt)] = ref
        self.params.update(optimizer_params(opt))
        self._names_resolved = False
        self._param_total = None
        self._rescan = self._discovered  # a new optimizer after the first scan: its model may be new too

    def watch_model(self, model: torch.nn.Module, name: str = "model") -> None:
        self.models.add_root(name, model)
        self._names_resolved = False
        self._param_total = None

    def optimizers(self) -> list[tuple[str, torch.optim.Optimizer]]:
        out = []
        for name, ref in self._optimizers:
            opt = ref()
            if opt is not None:
                out.append((name, opt))
        return out

    def _discover(self) -> bool:
        """Find the optimizers and models among live objects once. True when something is watched."""
        if not self._discovered:
            self._discovered = True
            self._scan()
        return bool(self._optimizers or self.models)

    def _scan(self) -> None:
        """Every live optimizer and root module (one pass over the collector's objects)."""
        self._rescan = False
        self._scanned_at = self.step
        optimizers, modules = naming.scan_live()
        for opt in optimizers:
            self.watch_optimizer(opt)
        self._rescan = False  # watch_optimizer asked for a scan: this is it
        self._adopt(modules)

    def _adopt(self, modules: list[torch.nn.Module]) -> None:
        """Watch modules not watched yet: the optimizer's own models first, so their names win."""
        new = [m for m in modules if not self.models.has(m)]
        if not new:
            return
        owned = {id(p) for p in self.params.live()}

        def owns(m: torch.nn.Module) -> bool:
            return any(id(p) in owned for p in m.parameters())

        new.sort(key=lambda m: not owns(m))
        for m in new:
            self.models.add_root(naming.variable_name_for(m, "model" if owns(m) else type(m).__name__), m)
        self._names_resolved = False
        self._param_total = None

    @property
    def device(self) -> torch.device:
        if self._device is None:
            device = self._detect_device()
            if not (self._optimizers or self.models):
                return device  # nothing watched yet: decide again later
            self._device = device
        return self._device

    def _detect_device(self) -> torch.device:
        for p in self.params.live():
            if p.device.type == "cuda":
                return p.device
        for _, m in self.models.roots():
            for p in m.parameters():
                if p.device.type == "cuda":
                    return p.device
        return torch.device("cpu")

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            backend = backend_for(self.device)
            if self._device is None:
                return backend  # device not settled yet (nothing watched)
            self._backend = backend
        return self._backend

    def _ensure_names(self) -> None:
        if self._rescan and (self._scanned_at is None or self.step - self._scanned_at >= RESCAN_AT_MOST_EVERY):
            self._discovered = True
            self._scan()
        self._adopt(naming.main_modules())  # a model made after the scan (an EMA copy)
        if self._names_resolved:
            return
        self._names_resolved = True
        self.params.names = self.models.param_names()
        self.params.resolver = self.models.param_names

    def _open(self) -> RankFileWriter:
        if self._writer is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.config.tensorboard:
                self._tb = TensorBoardWriter(self.run_dir / fmt.TENSORBOARD_DIR / f"rank{self.rank}")
            tb = self._tb
            on_written = (lambda rec: tb.add_step(rec) if rec.get("type") == "step" else None) if tb is not None else None
            # the file itself is claimed at the first record: rank<N>.jsonl or proc<pid>.jsonl
            self._writer = RankFileWriter(self.run_dir, self.rank, on_written)
        return self._writer

    def _base(self, kind: str) -> dict[str, Any]:
        return {"type": kind, "schema": fmt.SCHEMA_VERSION, "rank": self.rank, "time": time.time()}

    def write(self, record: dict[str, Any]) -> None:
        """Write now, errors to the caller: for records that must survive a crash (oom, stage, warning)."""
        if self.closed:
            return
        self._open().write_now(record)

    def put(self, record: dict[str, Any]) -> None:
        """Write a step record now (in the kernel before the next step starts); a write error drops it."""
        if self.closed:
            return
        self._open().put(record)

    # ------------------------------------------------------------------ accounting
    def _count_parameters(self) -> CategoryTotal:
        if self._param_total is not None and self.step - self._param_total_step < self._recount_every:
            return self._param_total
        self._ensure_names()  # (the first time: a scan of live objects, not part of a periodic recount's cost)
        t0 = time.thread_time()
        self.params.generation += 1
        for _, opt in self.optimizers():
            self.params.update(optimizer_params(opt))  # parameters added or replaced since
        total = CategoryTotal()
        dev, thr = self.device, self.config.large_tensor_bytes
        for name, t in self.models.named_tensors():
            add_tensor(total, t, dev, None, name, "parameters", thr)
        for p in self.params.live():
            add_tensor(total, p, dev, None, self.params.name_of(p), "parameters", thr)
        self._param_total = total
        self._param_total_step = self.step
        self._build_grad_slots()
        self._recount_cost = time.thread_time() - t0
        return total

    def _count_gradients(self) -> CategoryTotal:
        self._count_parameters()  # keeps the gradient slots current
        total = count_gradients(self._grad_slots, self.device, self.config.large_tensor_bytes)
        if total.stale:
            # a parameter was replaced (densification, re-wrapping): recount everything now
            self._param_total = None
            self._state_cache = None
            self._count_parameters()
            total = count_gradients(self._grad_slots, self.device, self.config.large_tensor_bytes)
        return total

    def _build_grad_slots(self) -> None:
        """Optimizer parameters plus the models' other trainable ones (re-listed with the parameter recount, every 200 steps)."""
        named: list[tuple[str, torch.Tensor]] = []
        seen: set[int] = set()
        for p in self.params.live():
            seen.add(id(p))
            named.append((self.params.name_of(p), p))
        for _, m in self.models.roots():
            for p in m.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    named.append((self.params.name_of(p), p))
        self._grad_slots = grad_slots(named, self.device, self.config.large_tensor_bytes, self.params.changed)

    def _count_static(self) -> tuple[CategoryTotal, CategoryTotal]:
        """Parameters and optimizer state, recounted on a change signal and periodically.

        Change signals, at a cost independent of the number of tensors: a watched parameter died
        (weak-reference callback: replaced by densification or re-wrapping), checked at every
        moment; an optimizer's shape changed (tensors in its state, parameters in its groups),
        checked at a step's first moment and after every optimizer step. Optimizers update their
        state in place, so between recounts the figure is exact; a state replaced wholesale (a
        loaded checkpoint) is picked up at the next periodic recount (every 200 steps or more,
        spaced to cost at most 0.1% of step time).
        """
        changed = self.params.changed
        if not changed.value and self._static_checked == self.step and self._param_total is not None and self._state_cache is not None:
            return self._param_total, self._state_cache[1]  # this step's first moment checked the optimizers
        self._static_checked = self.step
        opts = self.optimizers()
        signature = []
        for _, o in opts:
            n_params = 0
            for g in o.param_groups:
                n_params += len(g["params"])
            signature.append((id(o), len(o.state), n_params))
        if changed.value or signature != self._state_signature:
            changed.value = False
            self._state_signature = signature
            self._param_total = None
            self._state_cache = None
            if self._decided_for == self.step + 1 and not self._measure_this:
                self._measure_this = True  # carried gradients are stale now: measure the rest of this step
                self._measured_step = self.step + 1
        params = self._count_parameters()
        return params, self._count_state(params, opts)

    def _count_state(self, params: CategoryTotal, opts: list[tuple[str, torch.optim.Optimizer]]) -> CategoryTotal:
        cached = self._state_cache
        if cached is not None and self.step - cached[0] < self._recount_every:
            return cached[1]
        # storages already counted as parameters are not state (the set is built only on a recount)
        t0 = time.thread_time()
        total = count_optimizer_state(opts, self.params, self.device, params.keys, self.config.large_tensor_bytes)
        self._state_cache = (self.step, total)
        self._state_recount_cost = time.thread_time() - t0
        return total

    # ------------------------------------------------------------------ events
    def on_backward(self, t_outputs: object) -> None:
        """The autograd engine is about to run backward: the end of a forward pass."""
        if self.disabled:
            return
        if not self._discover():
            return
        roots = backward_roots(t_outputs)
        if not roots:
            return
        self._state.backward_calls += 1
        params, state = self._count_static()
        older: list[tuple[int, int, int]] = []
        walked_now = self._measuring() and self.config.activations != "off"
        if self._measuring():
            t0 = time.thread_time()  # CPU time: work descheduled on a busy machine is not costly work
            grads = self._count_gradients()
            self._fwd_grads = grads
            if walked_now:
                exclude = params.keys | state.keys
                walked = self._state.walked
                older_than = max(seq for seq, _ in walked) if walked else None
                walk = saved_tensors_of_graph(roots, self.device, exclude, self.config.large_tensor_bytes, older_than=older_than)
                acts = walk.total
                older = walk.older
                if self._act_step != self.step + 1 or acts.bytes >= self._act_bytes:
                    self._act_bytes = acts.bytes
                    self._act_large = acts.large
                self._act_step = self.step + 1
            else:
                acts = CategoryTotal()
            self._measure_cpu += time.thread_time() - t0
        else:
            # between measured steps the per-tensor figures are carried from the last measured
            # step, as the record's activations_step says; the allocator's figure is read now
            acts = CategoryTotal(bytes=self._act_bytes, large=self._act_large)
            grads = self._fwd_grads
        comp = Composition("forward_end", self.backend.allocated(), params, grads, state, acts)
        self._consider(comp)
        if walked_now:
            if older:
                self._add_older(older)
            seqs = [seq for seq in map(sequence_nr, roots) if seq is not None]
            if seqs:
                self._state.walked.append((max(seqs), comp))

    def _add_older(self, older: list[tuple[int, int, int]]) -> None:
        """Tensors found now that were alive at an earlier forward end of this step join it."""
        for root_seq, comp in self._state.walked:
            acts = comp.activations
            grew = False
            for seq, key, nbytes in older:
                if seq < root_seq and key not in acts.keys:
                    acts.keys.add(key)
                    acts.bytes += nbytes
                    grew = True
            if grew:
                self._consider(comp)
                if acts.bytes > self._act_bytes:
                    self._act_bytes = acts.bytes

    def _measuring(self) -> bool:
        """Whether this step measures the figures that cost Python work per tensor (the graph walk,
        gradient slots): every ``sample_every``-th step, decided at the step's first moment, and
        any step where a change signal fired."""
        next_step = self.step + 1
        if self._decided_for != next_step:
            self._decided_for = next_step
            last = self._measured_step
            self._measure_this = self.config.activations == "every" or last is None or next_step - last >= self.sample_every
            if self._measure_this:
                self._measured_step = next_step
        return self._measure_this

    def _consider(self, comp: Composition) -> None:
        state = self._state
        best = state.best
        if best is None or comp.weight() > best.weight():
            state.best = comp
        seen = state.moments.get(comp.point)
        if seen is None or comp.weight() > seen.weight():
            state.moments[comp.point] = comp
        hw = state.highwater
        if not hw:
            hw.update(parameters=-1, gradients=-1, optimizer_state=-1, activations=-1)  # CATEGORIES, in order
        if comp.parameters.bytes > hw["parameters"]:
            hw["parameters"] = comp.parameters.bytes
        if comp.gradients.bytes > hw["gradients"]:
            hw["gradients"] = comp.gradients.bytes
        if comp.optimizer_state.bytes > hw["optimizer_state"]:
            hw["optimizer_state"] = comp.optimizer_state.bytes
        if comp.activations.bytes > hw["activations"]:
            hw["activations"] = comp.activations.bytes

    def on_optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        """An optimizer finished its step (global post-hook)."""
        if self.disabled:
            return
        self.watch_optimizer(opt)
        if self._primary is None:
            self._primary = id(opt)
        self._consider_step_end("optimizer_step")
        self.backward_steps = False
        self._backward_ends = 0
        if id(opt) != self._primary:
            if id(opt) not in self._others_now:
                self._others_now.append(id(opt))
            return
        # Several optimizers stepping in turn (a GAN's D then G): the step ends after the last of
        # them, once it has stepped between the primary's last two steps. Decided once, within
        # the first steps: an optimizer that steps now and then never ends the steps.
        regular = [o for o in self._others_now if o in self._others_before]
        self._others_before, self._others_now = self._others_now, []
        if regular and not self._primary_settled:
            self._primary = regular[-1]
            self._primary_settled = True
            return
        if self.optimizer_steps_seen >= PRIMARY_SETTLES_AFTER:
            self._primary_settled = True
        self.optimizer_steps_seen += 1
        self._finish_step()

    def on_manual_step(self) -> None:
        """``prof.step()``: ends a step only where no optimizer step is seen (inference, custom optimizers)."""
        if self.disabled or self.optimizer_steps_seen:
            return
        self._manual_steps_seen += 1
        self.backward_steps = False
        self._consider_step_end("manual_step")
        self._finish_step()

    def on_backward_end(self) -> None:
        """An outermost backward pass returned. Where no optimizer step and no ``prof.step()`` marks
        the steps (weights updated by hand), each backward pass ends one step, said once in a warning."""
        if self.disabled or self.optimizer_steps_seen or self._manual_steps_seen or not self._discover():
            return
        self._backward_ends += 1
        if not self.backward_steps:
            if self._backward_ends < BACKWARD_STEPS_AFTER:
                return
            if self._backward_ends < BACKWARD_STEPS_WITH_OPTIMIZER and self._optimizer_exists():
                return  # gradient accumulation before the first optimizer step
            self.backward_steps = True
            self._warn_once(
                "backward_steps",
                f"no optimizer step after {self._backward_ends} backward passes (weights updated by hand?): "
                "memtop counts one step per backward pass; call prof.step() from memtop.profile() to mark steps yourself",
            )
        self._consider_step_end("backward_end")
        self._finish_step()

    def _optimizer_exists(self) -> bool:
        if self._optimizers:
            return True
        for opt in naming.find_optimizers():  # built after the first forward pass: watch it now
            self.watch_optimizer(opt)
        return bool(self._optimizers)

    def _consider_step_end(self, point: str) -> None:
        """The composition after the step: parameters, gradients and state all live, activations freed."""
        self._static_checked = -1  # the optimizer may have changed shape (its state is made at its first step)
        params, state = self._count_static()
        if self._measuring():
            t0 = time.thread_time()
            grads = self._end_grads = self._count_gradients()
            self._measure_cpu += time.thread_time() - t0
        else:
            grads = self._end_grads
        self._consider(Composition(point, self.backend.allocated(), params, grads, state, CategoryTotal()))

    def _finish_step(self) -> None:
        measured = self._measure_cpu > 0
        if measured:
            self._walk_costs.append(self._measure_cpu)
            del self._walk_costs[:-5]
            # the median of the last measured steps: one that met a garbage-collector pass is not typical
            self._act_cost = sorted(self._walk_costs)[len(self._walk_costs) // 2]
            self._measure_cpu = 0.0
        self.step += 1
        now = time.time()
        backend = self.backend
        peak = backend.take_peak()
        alloc_state = backend.state()
        used, total = backend.device_usage()
        comp = self._state.best
        assert comp is not None
        cats: dict[str, int | None] = {
            "parameters": comp.parameters.bytes,
            "gradients": comp.gradients.bytes,
            "optimizer_state": comp.optimizer_state.bytes,
            "activations": comp.activations.bytes,
            "other": None,
        }
        tracked = comp.tracked
        if peak is not None:
            if tracked > peak:
                self._warn_once("accounting", f"tracked tensors ({tracked} B) exceed the allocator peak ({peak} B) at step {self.step}; 'other' clamped to 0")
            cats["other"] = max(0, peak - tracked)
        frag_bytes = frag_pct = None
        if alloc_state.allocated is not None and alloc_state.reserved is not None:
            frag_bytes = alloc_state.reserved - alloc_state.allocated
            frag_pct = (100.0 * frag_bytes / alloc_state.reserved) if alloc_state.reserved else 0.0
        step_time = None if self._last_record_time is None else now - self._last_record_time
        self._last_record_time = now
        if step_time is not None:
            # the median of recent steps: an evaluation or checkpoint pause must not widen the budget
            times = self._step_times
            times.append(step_time)
            if len(times) > 21:
                del times[0]
            # the median moves slowly: taken again every few steps (and after a measured one)
            if measured or self.step < ADAPT_EVERY * 4 or self.step % ADAPT_EVERY == 0:
                self._step_time_avg = sorted(times)[len(times) // 2]
                self._adapt_sampling()
        # one literal in the key order of the record format (the record writer's fast path expects it)
        rec = {
            "type": "step",
            "schema": fmt.SCHEMA_VERSION,
            "rank": self.rank,
            "time": now,
            "step": self.step,
            "device": self._device_name(),
            "step_time": step_time,
            "allocated": alloc_state.allocated,
            "reserved": alloc_state.reserved,
            "peak": peak,
            "categories": cats,
            "peak_point": comp.point,
            "activations_step": self._act_step,
            "measured_step": self._measured_step,
            "tracked": tracked,
            "fragmentation_bytes": frag_bytes,
            "fragmentation_pct": frag_pct,
            "inactive_split_bytes": alloc_state.inactive_split,
            "device_used": used,
            "device_total": total,
            "large_tensors": self._large_tensors(comp),
            "moments": {point: _moment(c) for point, c in self._state.moments.items()},
            "highwater": dict(self._state.highwater),
            "sample_every": self.sample_every,
        }
        if self.step == 1:
            rec.update(modelinfo.describe(self.models.roots(), self.optimizers()))  # extra keys: the writer's general encoder takes it
        self.put(rec)
        self._state = _StepState()
        if self.config.max_steps is not None and self.step >= self.config.max_steps:
            self.exit_reason = "max_steps"
            self.close()
            raise SystemExit(0)

    def _device_name(self) -> str:
        name = self._device_str
        if name is None or self._device is None:
            name = self._device_str = str(self.device)
        return name

    def _adapt_sampling(self) -> None:
        """Measure the per-tensor figures only as often as fits the overhead budget."""
        if self.config.activations == "every" or not self._step_time_avg or self._act_cost <= 0:
            return
        budget = self.config.overhead_budget * self._step_time_avg
        self.sample_every = max(1, min(1000, math.ceil(self._act_cost / budget))) if budget > 0 else 1
        recount = self._recount_cost + self._state_recount_cost
        self._recount_every = max(PARAM_RECOUNT_EVERY, math.ceil(recount / (RECOUNT_BUDGET * self._step_time_avg)))

    def _large_tensors(self, comp: Composition) -> list[dict[str, object]]:
        """The largest tensors, largest first; the same list object as last step when unchanged
        (the record writer then reuses its serialized form)."""
        sources = (comp.parameters.large, comp.gradients.large, comp.optimizer_state.large, comp.activations.large)
        seen = self._large_sources
        if len(seen) == 4 and all(a is b for a, b in zip(sources, seen, strict=True)) and self._large_sizes == tuple(map(len, sources)):
            return self._last_large[1]  # the same lists as last step, unchanged (figures carried between measured steps)
        self._large_sources, self._large_sizes = sources, tuple(map(len, sources))
        items: list[TensorInfo] = []
        for large in sources:
            items.extend(large)
        items.sort(key=lambda t: t.bytes, reverse=True)
        top = items[: self.config.max_large_tensors]
        if top != self._last_large[0]:
            self._last_large = (top, [t.as_record() for t in top])
        return self._last_large[1]

    # ------------------------------------------------------------------ stages
    def stage_begin(self) -> dict[str, Any]:
        backend = self.backend if self._discover() else None
        cuda = backend is not None and backend.device.type == "cuda"
        ctx: dict[str, Any] = {"t0": time.perf_counter(), "cuda": cuda}
        if cuda and backend is not None:
            ctx["carry_peak"] = backend.take_peak()
            ctx["before"] = backend.allocated()
        else:
            ctx["before"] = rss_bytes()
            ctx["maxrss"] = peak_rss_bytes()
        return ctx

    def stage_end(self, name: str, ctx: dict[str, Any]) -> None:
        duration = time.perf_counter() - ctx["t0"]
        if ctx["cuda"]:
            backend = self.backend
            after = backend.allocated()
            peak = backend.take_peak()
            carry = ctx.get("carry_peak")
            if carry is not None and peak is not None:
                # keep the step's own peak intact across the reset the stage needed
                self._carry_peak(max(carry, peak))
            measure = "cuda_allocated"
        else:
            after = rss_bytes()
            maxrss_after = peak_rss_bytes()
            before_max = ctx.get("maxrss")
            rose = maxrss_after is not None and before_max is not None and maxrss_after > before_max
            # Linux updates the high-water mark lazily, so it may trail the RSS just read
            peak = max(maxrss_after, after or 0, ctx["before"] or 0) if rose and maxrss_after is not None else None
            measure = "rss"
        rec = self._base("stage")
        rec.update({"name": name, "step": self.step, "duration": duration, "before": ctx["before"], "after": after, "peak": peak, "measure": measure})
        self.write(rec)

    def _carry_peak(self, value: int) -> None:
        if self._backend is not None:
            self._backend.carry_peak(value)

    # ------------------------------------------------------------------ failures and exit
    def on_oom(self, message: str, requested: int | None, device_free: int | None) -> None:
        now = time.monotonic()
        if now - self._last_oom_time < 1.0:
            return  # the allocator observer already reported this one
        self._last_oom_time = now
        self._param_total = None
        self._state_cache = None
        params, state = self._count_static()
        grads = self._count_gradients()
        roots = naming.live_graph_roots()
        acts = saved_tensors_of_graph(roots, self.device, params.keys | grads.keys | state.keys, self.config.large_tensor_bytes).total
        alloc = self.backend.state()
        comp = Composition("oom", alloc.allocated, params, grads, state, acts)
        cats: dict[str, int | None] = {
            "parameters": params.bytes,
            "gradients": grads.bytes,
            "optimizer_state": state.bytes,
            "activations": acts.bytes,
            "other": max(0, alloc.allocated - comp.tracked) if alloc.allocated is not None else None,
        }
        rec = self._base("oom")
        rec.update(
            {
                "message": message[:2000],
                "requested_bytes": requested,
                "step": self.step,
                "device": self._device_name(),
                "categories": cats,
                "allocated": alloc.allocated,
                "reserved": alloc.reserved,
                "device_free": device_free,
                "large_tensors": self._large_tensors(comp),
            }
        )
        self.write(rec)
        self.exit_reason = "oom"

    def warn(self, message: str, disabled: bool = False) -> None:
        rec = self._base("warning")
        rec.update({"message": message, "source": "hook", "disabled": disabled})
        try:
            self.write(rec)
        except OSError:
            sys.stderr.write(f"memtop: {message}\n")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

    @property
    def writer_cpu_seconds(self) -> float:
        return self._writer.cpu_seconds if self._writer is not None else 0.0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._writer is None:
            return
        rec = self._base("exit")
        rec.update(
            {
                "reason": self.exit_reason,
                "exception": self.exception_name,
                "steps": self.step,
                "pid": os.getpid(),
                "hook_cpu_seconds": round(self.hook_cpu_seconds + self.writer_cpu_seconds, 6),
            }
        )
        try:
            self._writer.write_now(rec)
        finally:
            self._writer.close()
            if self._tb is not None:
                self._tb.close()


def _moment(comp: Composition) -> dict[str, int | None]:
    return {
        "allocated": comp.allocated,
        "parameters": comp.parameters.bytes,
        "gradients": comp.gradients.bytes,
        "optimizer_state": comp.optimizer_state.bytes,
        "activations": comp.activations.bytes,
    }
