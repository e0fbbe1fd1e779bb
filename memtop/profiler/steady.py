"""The steady step: where the next step's moments can only reuse the carried compositions.

Most steps fall between measured ones and change nothing: each moment reuses the composition it
had last step and the record repeats the last one (:meth:`~memtop.profiler.step_record.
StepRecordBuilder.repeat_of`; on CUDA where the allocator holds the same bytes at each moment as
the step before, as it does when the tensors' shapes do not change: each moment then reads the
allocator and is the plan's only if it does). At the end of such a step the session decides once
what the next step's moments will be if nothing changes; each moment then asks only what could
have changed since (a change signal, something newly watched, the optimizers' shapes, a recount
due, a measured step), not the whole general path. Anything else ends the plan and the moment
takes the general path, with the session in the state the general path would have left it in
(the tests compare both: ``tests/test_profiler_steady.py``).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from memtop.profiler.moments import Composition
from memtop.profiler.static_counts import optimizer_shape

if TYPE_CHECKING:
    import torch

    from memtop.profiler.session import Session


class SteadyStep:
    __slots__ = (
        "forwards",
        "end",
        "optimizer",
        "reads_allocator",
        "_at",
        "_changed",
        "_counts",
        "_due",
        "_every",
        "_generation",
        "_recount",
        "_sampling",
        "_shape",
        "_watched",
    )

    def __init__(self, session: Session, forwards: tuple[Composition, ...], end: Composition, opt: torch.optim.Optimizer) -> None:
        # the forward ends' compositions, in order: one per forward pass of the step (gradient
        # accumulation: several; on CUDA each may hold other bytes: the first micro-batch's forward
        # end has no gradients yet), then the optimizer step's
        self.forwards = forwards
        self.end = end
        self.optimizer = weakref.ref(opt)  # the optimizer whose step ends the steps
        # CUDA: each moment reads the allocator, and is the plan's only where it holds the bytes it
        # held then (a CPU has no allocator figure: its moments are the plan's without a read)
        self.reads_allocator = end.allocated is not None or any(f.allocated is not None for f in forwards)
        self._at = 0  # forward ends of the step in flight so far
        self._counts = session.counts
        self._changed = session.counts.params.changed  # set by a watched parameter's death
        self._sampling = session.sampling
        self._watched = session.watched
        self._generation = session.watched.generation
        self._shape = optimizer_shape(opt)
        self._every = self._recount = self._due = -1
        self._clock()

    def _clock(self) -> None:
        """The first step (as ``session.step`` counts at its moments) whose moments measure or
        recount: ``sampling.measuring(step + 1)`` (every ``sample_every``-th step from the last
        measured one) or a periodic recount (:meth:`StaticCounts.unchanged`); kept as one number,
        worked out again where the sampling budget moved its intervals (-1 where nothing was
        measured or counted yet: the plan carries nothing then)."""
        sampling, counts = self._sampling, self._counts
        self._every, self._recount = sampling.sample_every, sampling.recount_every
        measured, cached, counted = sampling.measured_step, counts.state_cache, counts.param_total_step
        if measured is None or cached is None or sampling.every_step:
            self._due = -1
            return
        every = sampling.recount_every
        self._due = min(measured + sampling.sample_every - 1, counted + every, cached[0] + every)

    def _in_time(self, step: int) -> bool:
        """No measuring, no recount and no change signal at the moments of the step after ``step``."""
        sampling = self._sampling
        if sampling.sample_every != self._every or sampling.recount_every != self._recount:
            self._clock()
        return step < self._due and not self._changed.value

    @classmethod
    def plan(cls, session: Session, opt: torch.optim.Optimizer) -> SteadyStep | None:
        """After ``opt``'s step ended a step: the next step's plan, where its record may repeat
        this one (its allocator figures, if any, permitting), one optimizer steps and every
        moment of this step was the composition its point now carries."""
        comps = session.records.repeatable()
        end = session.carried_compositions().get("optimizer_step")
        if comps is None or end is None or len(comps) < 2 or comps[-1] is not end:
            return None
        forwards = comps[:-1]
        for comp in forwards:
            if comp.point != "forward_end":
                return None
        if not session.steady_figures(forwards, end) or not session.ends_steps_alone(opt):
            return None
        return cls(session, forwards, end, opt)

    def step_ended(self) -> None:
        """The step ended on the plan: the next one's forward ends start again."""
        self._at = 0

    def forward_end(self, step: int) -> Composition | None:
        """At a forward end of the step after ``step``: the plan's composition for it, where
        nothing changed since the plan that can change between steps (a parameter replaced,
        something newly watched, a recount or measurement due, a parameter group added to the
        stepping optimizer); None where something did, or past the plan's forward ends (more
        forward passes than the planned step had). The optimizers' state and parameter lists
        change at an optimizer step: compared at the step's end (:meth:`carries_after_step`)."""
        opt = self.optimizer()
        if opt is None or len(opt.param_groups) != self._shape[1] or self._watched.generation != self._generation or not self._in_time(step):
            return None
        at, forwards = self._at, self.forwards
        if at >= len(forwards):
            return None
        self._at = at + 1
        return forwards[at]

    def carries_after_step(self, opt: torch.optim.Optimizer, step: int) -> bool:
        """At the end of ``opt``'s step: the same, and ``opt``'s shape as planned (the tensors in its
        state: made at an optimizer's first step for each parameter that has a gradient; its
        groups and their parameters). Another optimizer's shape is compared when the general path
        next runs (its own step, or the next measured step)."""
        return opt is self.optimizer() and self._watched.generation == self._generation and self._in_time(step) and optimizer_shape(opt) == self._shape

