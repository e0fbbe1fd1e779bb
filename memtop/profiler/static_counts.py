"""Parameters and optimizer state: counted exactly on a change signal and periodically, cached
in between; gradients counted from per-parameter slots made with the parameter count.

Parameters and optimizer state do not change between steps in the usual loop (optimizers update
their state in place), so recounting them every step would spend Python per tensor for nothing.
The change signals cost the same whatever the number of tensors: a watched parameter died
(weak-reference callback: replaced by densification or re-wrapping), checked at every moment; an
optimizer's shape changed (tensors in its state, parameters in its groups), checked at a step's
first moment and after every optimizer step. A state replaced wholesale (a loaded checkpoint) is
picked up at the next periodic recount (every 200 steps or more, spaced to cost at most 0.1% of
step time).
"""

from __future__ import annotations

import time

import torch

from memtop.profiler.accounting import (
    CategoryTotal,
    GradSlot,
    add_tensor,
    count_gradients,
    count_optimizer_state,
    grad_slots,
    optimizer_params,
)
from memtop.profiler.sampling import SamplingBudget
from memtop.profiler.watched import Watched


class StaticCounts:
    def __init__(self, watched: Watched, sampling: SamplingBudget, large_tensor_bytes: int) -> None:
        self.watched = watched
        self.params = watched.params
        self.sampling = sampling
        self.threshold = large_tensor_bytes
        self.param_total: CategoryTotal | None = None
        self.param_total_step = -1  # the step the parameter total was counted at
        self._generation = -1  # the watched set the parameter total was counted for
        self.state_cache: tuple[int, CategoryTotal] | None = None
        self.grad_slots: list[GradSlot] = []
        self._signature: list[tuple[int, tuple[int, int, int]]] = []
        self._checked_at = -1  # the step whose first moment compared the optimizers' shapes

    def forget(self) -> None:
        """Recount both at their next use (something they are made of changed)."""
        self.param_total = None
        self.state_cache = None

    def recheck(self) -> None:
        """Compare the optimizers' shapes again at the next moment (after an optimizer step: its
        state is made at its first step)."""
        self._checked_at = -1

    def _signature_now(self) -> list[tuple[int, tuple[int, int, int]]]:
        signature = []
        for _, ref in self.watched.optimizer_refs:
            o = ref()
            if o is None:
                continue
            signature.append((id(o), optimizer_shape(o)))
        return signature

    def unchanged(self, step: int, shapes: bool = True) -> bool:
        """Whether the cached totals stand at a moment of the step after ``step``: no change
        signal, nothing new watched, the optimizers' shapes as counted (compared at the step's
        first moment and after :meth:`recheck`; not with ``shapes=False``, where the caller
        compared what can change of them there) and no recount due. The common case, and all a
        steady step asks."""
        cached = self.state_cache
        if self.params.changed.value or self.param_total is None or cached is None or self._generation != self.watched.generation:
            return False
        if self._checked_at == step:
            return True  # this step's first moment checked the optimizers
        every = self.sampling.recount_every
        if step - self.param_total_step >= every or step - cached[0] >= every:
            return False
        if not shapes:
            return True
        if self._signature_now() != self._signature:
            return False
        self._checked_at = step
        return True

    def static(self, step: int) -> tuple[CategoryTotal, CategoryTotal]:
        """Parameters and optimizer state at a moment of the step after ``step`` (the one in flight)."""
        param_total, cached = self.param_total, self.state_cache
        if self.unchanged(step):
            assert param_total is not None and cached is not None
            return param_total, cached[1]  # (the common case: nothing changed, no recount due)
        changed = self.params.changed
        self._checked_at = step
        signature = self._signature_now()
        if changed.value or signature != self._signature:
            changed.value = False
            self._signature = signature
            self.forget()
            self.sampling.measure_rest_of(step + 1)  # carried gradients are stale now
        params = self.parameters(step)
        return params, self._state(step, params)

    def parameters(self, step: int) -> CategoryTotal:
        total = self.param_total
        watched = self.watched
        if total is not None and step - self.param_total_step < self.sampling.recount_every and self._generation == watched.generation:
            return total
        watched.ensure_names(step)  # (the first time: a scan of live objects, not part of a periodic recount's cost)
        self._generation = watched.generation
        t0 = time.thread_time()
        params = self.params
        params.generation += 1
        for _, opt in watched.optimizers():
            params.update(optimizer_params(opt))  # parameters added or replaced since
        total = CategoryTotal()
        dev, thr = watched.device, self.threshold
        for name, t in watched.models.named_tensors():
            add_tensor(total, t, dev, None, name, "parameters", thr)
        for p in params.live():
            add_tensor(total, p, dev, None, params.name_of(p), "parameters", thr)
        self.param_total = total
        self.param_total_step = step
        self._build_grad_slots()
        self.sampling.recount_cost = time.thread_time() - t0
        return total

    def gradients(self, step: int) -> CategoryTotal:
        self.parameters(step)  # keeps the gradient slots current
        total = count_gradients(self.grad_slots, self.watched.device, self.threshold)
        if total.stale:
            # a parameter was replaced (densification, re-wrapping): recount everything now
            self.forget()
            self.parameters(step)
            total = count_gradients(self.grad_slots, self.watched.device, self.threshold)
        return total

    def _build_grad_slots(self) -> None:
        """Optimizer parameters plus the models' other trainable ones (re-listed with the parameter recount)."""
        named: list[tuple[str, torch.Tensor]] = []
        seen: set[int] = set()
        params = self.params
        for p in params.live():
            seen.add(id(p))
            named.append((params.name_of(p), p))
        for _, m in self.watched.models.roots():
            for p in m.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    named.append((params.name_of(p), p))
        self.grad_slots = grad_slots(named, self.watched.device, self.threshold, params.changed)

    def _state(self, step: int, params: CategoryTotal) -> CategoryTotal:
        cached = self.state_cache
        if cached is not None and step - cached[0] < self.sampling.recount_every:
            return cached[1]
        # storages already counted as parameters are not state (the set is built only on a recount)
        t0 = time.thread_time()
        total = count_optimizer_state(self.watched.optimizers(), self.params, self.watched.device, params.keys, self.threshold)
        self.state_cache = (step, total)
        self.sampling.state_recount_cost = time.thread_time() - t0
        return total


def optimizer_shape(opt: torch.optim.Optimizer) -> tuple[int, int, int]:
    """What changes when an optimizer changes shape: the tensors in its state (made at its first
    step for each parameter with a gradient), its parameter groups and their parameters."""
    n_params = 0
    for group in opt.param_groups:
        n_params += len(group["params"])
    return len(opt.state), len(opt.param_groups), n_params
