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
from memtop.profiler.activations import backward_roots, saved_tensors_of_graph
from memtop.profiler.backends import Backend, backend_for, peak_rss_bytes, rss_bytes
from memtop.profiler.config import HookConfig
from memtop.profiler.writers import BackgroundJsonlWriter, TensorBoardWriter
from memtop.runs import format as fmt

PARAM_RECOUNT_EVERY = 200


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


@dataclass
class _StepState:
    best: Composition | None = None
    moments: dict[str, Composition] = field(default_factory=dict)
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
        self._primary: int | None = None  # id() of the optimizer whose step ends a memtop step
        self._names_resolved = False
        self._discovered = False
        self._device: torch.device | None = None
        self._backend: Backend | None = None
        self._writer: BackgroundJsonlWriter | None = None
        self._tb: TensorBoardWriter | None = None
        self._state = _StepState()
        self._last_record_time: float | None = None
        self._param_total: CategoryTotal | None = None
        self._param_total_step = -1
        self._last_state_total = CategoryTotal()
        self._state_cache: tuple[tuple[tuple[int, int, int], ...], int, CategoryTotal] | None = None
        self._grad_slots: list[GradSlot] = []
        self._fwd_grads = CategoryTotal()
        self._last_large: tuple[list[TensorInfo], list[dict[str, object]]] = ([], [])
        self._act_bytes = 0
        self._act_large: list[TensorInfo] = []
        self._act_step: int | None = None
        self._act_cost = 0.0  # CPU seconds of a typical graph walk
        self._walk_costs: list[float] = []
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
        if any(r() is opt for _, r in self._optimizers):
            return
        taken = {n for n, _ in self._optimizers}
        base = name or "optimizer"
        label, i = base, 1
        while label in taken:
            i += 1
            label = f"{base}_{i}"
        self._optimizers.append((label, weakref.ref(opt)))
        self.params.update(optimizer_params(opt))
        self._names_resolved = False
        self._param_total = None

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
        """Zero-code: find the optimizers once if no step told us yet. True when something is watched."""
        if not self._optimizers and not self.models and not self._discovered:
            self._discovered = True
            for opt in naming.find_optimizers():
                self.watch_optimizer(opt)
        return bool(self._optimizers or self.models)

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
        if self._names_resolved:
            return
        self._names_resolved = True
        if not self.models:
            ids = {id(p) for p in self.params.live()}
            roots = naming.find_root_modules(ids) if ids else []
            named = [(naming.variable_name_for(m, "model"), m) for m in roots]
            self.models.set_roots(named)
        self.params.names = self.models.param_names()
        self.params.resolver = self.models.param_names

    def _open(self) -> BackgroundJsonlWriter:
        if self._writer is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.config.tensorboard:
                self._tb = TensorBoardWriter(self.run_dir / fmt.TENSORBOARD_DIR / f"rank{self.rank}")
            tb = self._tb
            on_written = (lambda rec: tb.add_step(rec) if rec.get("type") == "step" else None) if tb is not None else None
            self._writer = BackgroundJsonlWriter(self.run_dir / fmt.rank_file_name(self.rank), on_written)
        return self._writer

    def _base(self, kind: str) -> dict[str, Any]:
        return {"type": kind, "schema": fmt.SCHEMA_VERSION, "rank": self.rank, "time": time.time()}

    def write(self, record: dict[str, Any]) -> None:
        """Write now (in order after queued step records): for records that must survive a crash."""
        if self.closed:
            return
        self._open().write_now(record)

    def put(self, record: dict[str, Any]) -> None:
        """Queue a step record; the writer thread serializes and flushes it within milliseconds."""
        if self.closed:
            return
        self._open().put(record)

    # ------------------------------------------------------------------ accounting
    def _count_parameters(self) -> CategoryTotal:
        if self._param_total is not None and self.step - self._param_total_step < PARAM_RECOUNT_EVERY:
            return self._param_total
        self._ensure_names()
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
        self._grad_slots = grad_slots(named, self.device, self.config.large_tensor_bytes)

    def _count_state(self, params: CategoryTotal) -> CategoryTotal:
        """Optimizer state, recounted when its shape (tensors per optimizer) changes or every 200 steps.

        Optimizers update their state in place, so between recounts the figure is exact; a state
        replaced wholesale (a loaded checkpoint) is picked up at the next recount.
        """
        opts = self.optimizers()
        signature = tuple((id(o), len(o.state), sum(len(g["params"]) for g in o.param_groups)) for _, o in opts)
        cached = self._state_cache
        if cached is not None and cached[0] == signature and self.step - cached[1] < PARAM_RECOUNT_EVERY:
            return cached[2]
        if cached is not None and cached[0] != signature:
            self._param_total = None  # the optimizer's parameters changed: recount them too
        # storages already counted as parameters are not state (the set is built only on a recount)
        total = count_optimizer_state(opts, self.params, self.device, params.keys, self.config.large_tensor_bytes)
        self._state_cache = (signature, self.step, total)
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
        params = self._count_parameters()
        state = self._last_state_total
        if self._should_walk():
            grads = self._count_gradients()
            self._fwd_grads = grads
            exclude = params.keys | state.keys
            t0 = time.thread_time()  # CPU time: a walk descheduled on a busy machine is not a costly walk
            walk = saved_tensors_of_graph(roots, self.device, exclude, self.config.large_tensor_bytes)
            self._walk_costs.append(time.thread_time() - t0)
            del self._walk_costs[:-5]
            # the median of the last walks: one that met a garbage-collector pass is not typical
            self._act_cost = sorted(self._walk_costs)[len(self._walk_costs) // 2]
            acts = walk.total
            if self._act_step != self.step + 1 or acts.bytes >= self._act_bytes:
                self._act_bytes = acts.bytes
                self._act_large = acts.large
            self._act_step = self.step + 1
        else:
            # between walks the forward-end figures are carried from the last walked step, as the
            # record's activations_step says; the allocator's own figure is always read now
            acts = CategoryTotal(bytes=self._act_bytes, large=list(self._act_large))
            grads = self._fwd_grads
        comp = Composition("forward_end", self.backend.allocated(), params, grads, state, acts)
        self._consider(comp)

    def _should_walk(self) -> bool:
        mode = self.config.activations
        if mode == "off":
            return False
        if mode == "every" or self._act_step is None:
            return True
        next_step = self.step + 1
        return next_step == self._act_step or next_step - self._act_step >= self.sample_every

    def _consider(self, comp: Composition) -> None:
        state = self._state
        best = state.best
        if best is None or comp.weight() > best.weight():
            state.best = comp
        seen = state.moments.get(comp.point)
        if seen is None or comp.weight() > seen.weight():
            state.moments[comp.point] = comp

    def on_optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        """An optimizer finished its step (global post-hook)."""
        if self.disabled:
            return
        self.watch_optimizer(opt)
        if self._primary is None:
            self._primary = id(opt)
        self._consider_step_end("optimizer_step")
        if id(opt) == self._primary:
            self.optimizer_steps_seen += 1
            self._finish_step()

    def on_manual_step(self) -> None:
        """``prof.step()``: ends a step only where no optimizer step is seen (inference, custom optimizers)."""
        if self.disabled or self.optimizer_steps_seen:
            return
        self._consider_step_end("manual_step")
        self._finish_step()

    def _consider_step_end(self, point: str) -> None:
        """The composition after the step: parameters, gradients and state all live, activations freed."""
        params = self._count_parameters()
        grads = self._count_gradients()
        state = self._count_state(params)
        self._last_state_total = state
        self._consider(Composition(point, self.backend.allocated(), params, grads, state, CategoryTotal()))

    def _finish_step(self) -> None:
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
            self._step_times.append(step_time)
            del self._step_times[:-21]
            self._step_time_avg = sorted(self._step_times)[len(self._step_times) // 2]
        self._adapt_sampling()
        rec = self._base("step")
        rec.update(
            {
                "step": self.step,
                "time": now,
                "device": str(self.device),
                "step_time": step_time,
                "allocated": alloc_state.allocated,
                "reserved": alloc_state.reserved,
                "peak": peak,
                "categories": cats,
                "peak_point": comp.point,
                "activations_step": self._act_step,
                "tracked": tracked,
                "fragmentation_bytes": frag_bytes,
                "fragmentation_pct": frag_pct,
                "inactive_split_bytes": alloc_state.inactive_split,
                "device_used": used,
                "device_total": total,
                "large_tensors": self._large_tensors(comp),
                "moments": {point: _moment(c) for point, c in self._state.moments.items()},
                "sample_every": self.sample_every,
            }
        )
        if self.step == 1:
            rec.update(modelinfo.describe(self.models.roots(), self.optimizers()))
        self.put(rec)
        self._state = _StepState()
        if self.config.max_steps is not None and self.step >= self.config.max_steps:
            self.exit_reason = "max_steps"
            self.close()
            raise SystemExit(0)

    def _adapt_sampling(self) -> None:
        """Walk the autograd graph only as often as fits the overhead budget."""
        if self.config.activations != "auto" or not self._step_time_avg or self._act_cost <= 0:
            return
        budget = self.config.overhead_budget * self._step_time_avg
        self.sample_every = max(1, min(1000, math.ceil(self._act_cost / budget))) if budget > 0 else 1

    def _large_tensors(self, comp: Composition) -> list[dict[str, object]]:
        """The largest tensors, largest first; the same list object as last step when unchanged
        (the record writer then reuses its serialized form)."""
        items: list[TensorInfo] = []
        for total in (comp.parameters, comp.gradients, comp.optimizer_state, comp.activations):
            items.extend(total.large)
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
        params = self._count_parameters()
        grads = self._count_gradients()
        state = self._count_state(params)
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
                "device": str(self.device),
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
