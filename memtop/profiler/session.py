"""One profiling session per process (rank): measures each step and writes its records.

The session is driven by events that :mod:`memtop.profiler.hooks` forwards from torch: the start
of every backward pass (the end of a forward pass) and the end of every optimizer step. It keeps
only weak references to models, optimizers and parameters.

Its parts: :mod:`~memtop.profiler.watched` (what is watched), :mod:`~memtop.profiler.static_counts`
(parameters, optimizer state, gradients), :mod:`~memtop.profiler.sampling` (how often the
per-tensor figures are measured), :mod:`~memtop.profiler.moments` (the step's moments) and
:mod:`~memtop.profiler.step_record` (the record). On a step that measures nothing per tensor
(most steps) a moment costs one allocator read and the reuse of the carried composition.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from memtop.profiler import modelinfo, naming, oom_snapshot, stages
from memtop.profiler.accounting import CategoryTotal, TensorInfo
from memtop.profiler.activations import backward_roots, has_backward_root, saved_tensors_of_graph, sequence_nr
from memtop.profiler.backends import Backend, backend_for
from memtop.profiler.config import HookConfig
from memtop.profiler.moments import CATEGORIES, Composition, StepMoments
from memtop.profiler.sampling import SamplingBudget
from memtop.profiler.static_counts import StaticCounts
from memtop.profiler.steady import SteadyStep
from memtop.profiler.step_boundary import StepBoundary
from memtop.profiler.step_record import StepRecordBuilder
from memtop.profiler.watched import Watched
from memtop.profiler.writers import RankFileWriter, TensorBoardWriter, repeat_record
from memtop.runs import format as fmt

__all__ = ["CATEGORIES", "Composition", "Session"]

BACKWARD_STEPS_AFTER = 2  # backward passes without an optimizer step before steps come from backward
BACKWARD_STEPS_WITH_OPTIMIZER = 64  # the same where an optimizer exists (gradient accumulation)


class Session:
    def __init__(self, config: HookConfig, run_dir: Path, rank: int | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.rank = config.rank if rank is None else rank
        self.disabled = False
        self.step = 0
        self.optimizer_steps_seen = 0
        self.watched = Watched()
        self.params = self.watched.params
        self.models = self.watched.models
        self.sampling = SamplingBudget(config.activations, config.overhead_budget)
        self.counts = StaticCounts(self.watched, self.sampling, config.large_tensor_bytes)
        self.records = StepRecordBuilder(config.max_large_tensors)
        self._boundary = StepBoundary()
        self._manual_steps_seen = 0
        self._backward_ends = 0  # outermost backward passes since the last optimizer or manual step
        self.backward_steps = False  # no optimizer steps: one step per backward pass
        self._device_str: str | None = None
        self._backend: Backend | None = None
        self._writer: RankFileWriter | None = None
        self._tb: TensorBoardWriter | None = None
        self._moments = StepMoments()
        self._last_record_time: float | None = None
        self._fwd_grads = CategoryTotal()  # gradients at the last measured step's forward end …
        self._end_grads = CategoryTotal()  # … and at its end: carried to the steps between
        self._act_bytes = 0
        self._act_large: list[TensorInfo] = []
        self._act_step: int | None = None
        self._carried_acts: CategoryTotal | None = None  # the carried activations, made once per measured value
        self._carried: dict[str, Composition] = {}  # point -> the last carried composition (reused while unchanged)
        self._pending: list[Composition] = []  # this step's moments that reused a carried composition, not weighed yet
        self._step_comps: list[Composition] = []  # every moment of this step so far, in order (what its record is made of)
        self.steady: SteadyStep | None = None  # the next step's moments where nothing changes (between measured steps)
        self._no_acts = CategoryTotal()  # activations after the optimizer step (freed)
        self._last_oom_time = 0.0
        self._warned: set[str] = set()
        self.hook_cpu_seconds = 0.0  # CPU time of memtop's callbacks on the training thread
        self._max_steps = config.max_steps  # (read at every step's end)
        self.exit_reason = "normal"
        self.exception_name: str | None = None
        self.closed = False

    # ------------------------------------------------------------------ set-up
    def watch_optimizer(self, opt: torch.optim.Optimizer, name: str | None = None) -> None:
        self.watched.watch_optimizer(opt, name)

    def watch_model(self, model: torch.nn.Module, name: str = "model") -> None:
        self.watched.watch_model(model, name)

    def optimizers(self) -> list[tuple[str, torch.optim.Optimizer]]:
        return self.watched.optimizers()

    @property
    def sample_every(self) -> int:
        return self.sampling.sample_every

    @property
    def device(self) -> torch.device:
        return self.watched.device

    @property
    def backend(self) -> Backend:
        backend = self._backend
        if backend is None:
            backend = backend_for(self.watched.device)
            if not self.watched.device_settled:
                return backend  # device not settled yet (nothing watched)
            self._backend = backend
        return backend

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

    # ------------------------------------------------------------------ moments
    def _set_activations(self, nbytes: int, large: list[TensorInfo]) -> None:
        self._act_bytes = nbytes
        self._act_large = large
        self._carried_acts = None

    def _consider_carried(
        self, point: str, params: CategoryTotal, grads: CategoryTotal, state: CategoryTotal, acts: CategoryTotal, read: int | None = None
    ) -> None:
        """A moment of a step that measures nothing per tensor: the carried figures, the allocator
        now (``read``: its figure, already read at this moment; only CUDA reads one ahead).

        The same figures as this moment's last time (between measured steps: on a CPU always, on
        CUDA where the allocator holds the same bytes) reuse its composition and leave it pending:
        the step's end then copies the last record when every moment of the step was such a one,
        without weighing the moments again."""
        alloc = read
        if alloc is None:
            backend = self._backend or self.backend
            alloc = backend.allocated() if point == "forward_end" else backend.step_end_allocated()
        comp = self._carried.get(point)
        if comp is not None and comp.same(alloc, params, grads, state, acts):
            self._pending.append(comp)
            self._step_comps.append(comp)
            return
        comp = self._carried[point] = Composition(point, alloc, params, grads, state, acts)
        self._consider(comp)

    def _consider(self, comp: Composition) -> None:
        if self._pending:
            self._flush_pending()
        self._moments.consider(comp)
        self._step_comps.append(comp)

    def _flush_pending(self) -> None:
        """The pending moments join the step's moments (in the order they happened)."""
        moments = self._moments
        for comp in self._pending:
            moments.consider(comp)
        self._pending.clear()

    def on_backward(self, t_outputs: object) -> None:
        """The autograd engine is about to run backward: the end of a forward pass."""
        if self.disabled:
            return
        steady = self.steady
        if steady is not None:  # (more forward ends than the plan's: the general path from there on)
            comp = steady.forward_end(self.step)  # (no measuring, no recount due: the plan's clock)
            if comp is not None:
                if steady.reads_allocator:  # CUDA: the moment is the plan's where the allocator holds what it held
                    alloc = (self._backend or self.backend).allocated()
                    if alloc != comp.allocated:
                        self.steady = None  # the general path's moment, with the plan's (current) figures
                        self._consider_carried("forward_end", comp.parameters, comp.gradients, comp.optimizer_state, comp.activations, alloc)
                        return
                self._pending.append(comp)  # what _consider_carried would reuse, without asking
                self._step_comps.append(comp)
                return
            self.steady = None
        watched = self.watched
        if not (watched.discovered and watched.optimizer_refs) and not watched.discover(self.step):
            return
        if not has_backward_root(t_outputs):
            return
        step = self.step
        params, state = self.counts.static(step)
        if self.sampling.measuring(step + 1):
            self._measure_forward_end(t_outputs, params, state)
            return
        # between measured steps the per-tensor figures are carried from the last measured
        # step, as the record's activations_step says; the allocator's figure is read now
        acts = self._carried_acts
        if acts is None:
            acts = self._carried_acts = CategoryTotal(bytes=self._act_bytes, large=self._act_large)
        self._consider_carried("forward_end", params, self._fwd_grads, state, acts)

    def _measure_forward_end(self, t_outputs: object, params: CategoryTotal, state: CategoryTotal) -> None:
        moments = self._moments
        next_step = self.step + 1
        walked_now = self.config.activations != "off"
        older: list[tuple[int, int, int]] = []
        roots = backward_roots(t_outputs)
        t0 = time.thread_time()  # CPU time: work descheduled on a busy machine is not costly work
        grads = self._fwd_grads = self.counts.gradients(self.step)
        if walked_now:
            exclude = params.keys | state.keys
            walked = moments.walked
            older_than = max(seq for seq, _ in walked) if walked else None
            walk = saved_tensors_of_graph(roots, self.device, exclude, self.config.large_tensor_bytes, older_than=older_than)
            acts = walk.total
            older = walk.older
            if self._act_step != next_step or acts.bytes >= self._act_bytes:
                self._set_activations(acts.bytes, acts.large)
                self._carried_acts = acts  # the figures carried from here on are this walk's
            self._act_step = next_step
        else:
            acts = CategoryTotal()
        self.sampling.measure_cpu += time.thread_time() - t0
        comp = Composition("forward_end", self.backend.allocated(), params, grads, state, acts)
        if acts is self._carried_acts:
            self._carried["forward_end"] = comp  # the next steps' forward ends are this one, carried
        self._consider(comp)
        if walked_now:
            if older:
                largest = moments.add_older(older)
                if largest > self._act_bytes:
                    self._set_activations(largest, self._act_large)
            seqs = [seq for seq in map(sequence_nr, roots) if seq is not None]
            if seqs:
                moments.walked.append((max(seqs), comp))

    def _consider_step_end(self, point: str, read: int | None = None) -> None:
        """The composition after the step: parameters, gradients and state all live, activations
        freed (``read``: the allocator's figure, already read at this moment)."""
        counts = self.counts
        counts.recheck()  # the optimizer may have changed shape (its state is made at its first step)
        params, state = counts.static(self.step)
        if not self.sampling.measuring(self.step + 1):
            self._consider_carried(point, params, self._end_grads, state, self._no_acts, read)
            return
        t0 = time.thread_time()
        grads = self._end_grads = counts.gradients(self.step)
        self.sampling.measure_cpu += time.thread_time() - t0
        alloc = read if read is not None else self.backend.step_end_allocated()
        comp = self._carried[point] = Composition(point, alloc, params, grads, state, self._no_acts)
        self._consider(comp)  # (the next steps' moments here are this one, carried)

    # ------------------------------------------------------------------ the steady step
    def carried_compositions(self) -> dict[str, Composition]:
        """Point -> the composition its next moment reuses where the carried figures stand."""
        return self._carried

    def steady_figures(self, forwards: tuple[Composition, ...], end: Composition) -> bool:
        """Whether the forward ends ``forwards`` and ``end`` are made of the figures carried now, as
        the moments between measured steps would find them (:meth:`_consider_carried`; the
        allocator's figure is read at each moment of a steady step)."""
        counts = self.counts
        params, cached, acts = counts.param_total, counts.state_cache, self._carried_acts
        if params is None or cached is None or acts is None or self.sampling.every_step:
            return False
        state, grads = cached[1], self._fwd_grads
        for f in forwards:
            if not f.same(f.allocated, params, grads, state, acts):
                return False
        return end.same(end.allocated, params, self._end_grads, state, self._no_acts)

    def ends_steps_alone(self, opt: torch.optim.Optimizer) -> bool:
        """Whether ``opt``'s step ends every step, no other optimizer stepping between."""
        return not self.backward_steps and not self._pending and self._boundary.alone(id(opt))

    # ------------------------------------------------------------------ step ends
    def on_optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        """An optimizer finished its step (global post-hook)."""
        if self.disabled:
            return
        steady = self.steady
        read = None
        if steady is not None:
            if not steady.carries_after_step(opt, self.step):
                steady = None
            elif steady.reads_allocator:  # CUDA: the moment is the plan's where the allocator holds what it held
                read = (self._backend or self.backend).step_end_allocated()
                if read != steady.end.allocated:
                    steady = None
        if steady is not None:
            self._pending.append(steady.end)  # what _consider_step_end would reuse, without asking
            self._step_comps.append(steady.end)
            steady.step_ended()
        else:
            self.steady = None
            self.watched.watch_optimizer(opt)
            self._consider_step_end("optimizer_step", read)
        self.backward_steps = False
        self._backward_ends = 0
        # (the plan's optimizer ends every step, alone: the boundary's answer, without asking)
        if steady is not None or self._boundary.ends_step(id(opt), self.optimizer_steps_seen):
            self.optimizer_steps_seen += 1
            self._finish_step()
            if self.steady is None:  # (a steady step leaves its plan standing: nothing it rests on changed)
                self.steady = SteadyStep.plan(self, opt)

    def on_manual_step(self) -> None:
        """``prof.step()``: ends a step only where no optimizer step is seen (inference, custom optimizers)."""
        if self.disabled or self.optimizer_steps_seen:
            return
        self.steady = None
        self._manual_steps_seen += 1
        self.backward_steps = False
        self._consider_step_end("manual_step")
        self._finish_step()

    def on_backward_end(self) -> None:
        """An outermost backward pass returned. Where no optimizer step and no ``prof.step()`` marks
        the steps (weights updated by hand), each backward pass ends one step, said once in a warning."""
        if self.disabled or self.optimizer_steps_seen or self._manual_steps_seen or not self.watched.discover(self.step):
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
        if self.watched.optimizer_refs:
            return True
        for opt in naming.find_optimizers():  # built after the first forward pass: watch it now
            self.watched.watch_optimizer(opt)
        return bool(self.watched.optimizer_refs)

    def _finish_step(self) -> None:
        self.step += 1
        step = self.step
        now = time.time()
        peak, alloc, used, total = (self._backend or self.backend).end_of_step()
        prev = self._last_record_time
        step_time = None if prev is None else now - prev
        self._last_record_time = now
        sampling = self.sampling
        sampling.step_done(step, step_time)
        records = self.records
        writer = self._writer
        if self.steady is not None and writer is not None and not self.closed:  # every moment was the plan's
            last = records.repeat_of_planned(len(self._step_comps), self._act_step, sampling.measured_step, sampling.sample_every, total, peak, alloc)
            if last is not None:
                writer.put_repeat(last, now, step, step_time, used)  # no record dict made (most steps)
                self._step_comps.clear()
                self._pending.clear()
                if self._max_steps is not None:
                    self._after_step(step)
                return
        device = self._device_str if self._backend is not None and self._device_str is not None else self._device_name()
        comps = tuple(self._step_comps)
        self._step_comps.clear()
        pending = comps if self._pending and self._moments.best is None else None
        rec = None
        if pending is not None:
            last = records.repeat_of(pending, self.rank, device, alloc, peak, self._act_step, sampling.measured_step, sampling.sample_every)
            if last is not None:
                if total == last["device_total"] and writer is not None and not self.closed:
                    writer.put_repeat(last, now, step, step_time, used)  # no record dict made (most steps of a CPU run)
                    self._pending.clear()
                    self._after_step(step)
                    return
                rec = repeat_record(last, now, step, step_time, used)
                rec["device_total"] = total
        measured = sampling.measured_step == step
        t0 = time.thread_time() if measured else 0.0
        if rec is None:
            self._flush_pending()
            rec = records.build(
                rank=self.rank,
                now=now,
                step=step,
                device=device,
                step_time=step_time,
                alloc=alloc,
                peak=peak,
                state=self._moments,
                activations_step=self._act_step,
                measured_step=sampling.measured_step,
                device_used=used,
                device_total=total,
                sample_every=sampling.sample_every,
                comps=comps,
            )
        if records.overcount is not None:
            tracked, at_peak = records.overcount
            self._warn_once("accounting", f"tracked tensors ({tracked} B) exceed the allocator peak ({at_peak} B) at step {step}; 'other' clamped to 0")
        if step == 1:  # extra keys (a copy: the builder may reuse the record it made); the writer's general encoder takes it
            rec = {**rec, **modelinfo.describe(self.models.roots(), self.optimizers())}
        if writer is not None and not self.closed:
            writer.put(rec)
        else:
            self.put(rec)
        if measured:  # a measured step's record is new (built, encoded whole): part of the measuring's cost
            sampling.book_record(time.thread_time() - t0)
        if self._moments.best is not None:  # (a repeated step weighed no moment)
            self._moments.clear()
        self._pending.clear()
        self._after_step(step)

    def _after_step(self, step: int) -> None:
        if self._max_steps is not None and step >= self._max_steps:
            self.exit_reason = "max_steps"
            self.close()
            raise SystemExit(0)

    def _device_name(self) -> str:
        name = self._device_str
        if name is None or not self.watched.device_settled:
            name = self._device_str = str(self.device)
        return name

    # ------------------------------------------------------------------ stages
    def stage_begin(self) -> dict[str, Any]:
        return stages.begin(self.backend if self.watched.discover(self.step) else None)

    def stage_end(self, name: str, ctx: dict[str, Any]) -> None:
        rec = self._base("stage")
        rec.update({"name": name, "step": self.step, **stages.end(self.backend, ctx)})
        self.write(rec)

    # ------------------------------------------------------------------ failures and exit
    def on_oom(self, message: str, requested: int | None, device_free: int | None) -> None:
        self.steady = None
        now = time.monotonic()
        if now - self._last_oom_time < 1.0:
            return  # the allocator observer already reported this one
        self._last_oom_time = now
        cats, comp, alloc = oom_snapshot.snapshot(self.counts, self.step, self.backend, self.config.large_tensor_bytes)
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
                "large_tensors": self.records.large_tensors(comp),
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
