"""How often the figures that cost Python work per tensor are measured: a share of step time.

The graph walk and the gradient slots cost CPU in proportion to the number of tensors; they are
measured every ``sample_every``-th step, with ``sample_every`` chosen from their measured cost and
the median step time so that they take at most ``overhead_budget`` of it. Exact recounts of
parameters and optimizer state (a safety net behind the change signals) are spaced the same way.
"""

from __future__ import annotations

import math
from collections import deque

PARAM_RECOUNT_EVERY = 200  # at least this many steps between periodic exact recounts (a safety net
RECOUNT_BUDGET = 0.001  # behind the change signals), and more where a recount would cost over 0.1% of step time
ADAPT_EVERY = 8  # steps between re-decisions of the sampling interval (and after every measured step)
STEP_TIMES_KEPT = 21  # the median of this many recent step times is "the" step time
SAMPLE_EVERY_ROOM = 1.1  # a wider interval goes 10% beyond what the budget asks …
SAMPLE_EVERY_SLACK = 1.3  # … and narrows only where the budget allows 30% more often


class SamplingBudget:
    def __init__(self, activations: str, overhead_budget: float) -> None:
        self.every_step = activations == "every"
        self.overhead_budget = overhead_budget
        self.sample_every = 1
        self.recount_every = PARAM_RECOUNT_EVERY
        self.recount_cost = 0.0  # CPU seconds of the last exact recount of parameters
        self.state_recount_cost = 0.0  # … and of optimizer state
        self.act_cost = 0.0  # CPU seconds of a measured step's per-tensor work (typical)
        self.measure_cpu = 0.0  # … of this step so far
        self.measured_step: int | None = None  # the last step that measured per-tensor figures
        self._walk_costs: list[float] = []  # CPU seconds of the last measured steps' per-tensor work
        self._decided_for = -1  # the step whose `_measure_this` is decided
        self._measure_this = True
        self._step_times: deque[float] = deque(maxlen=STEP_TIMES_KEPT)
        self.step_time_avg: float | None = None

    def measuring(self, step: int) -> bool:
        """Whether ``step`` measures the per-tensor figures: every ``sample_every``-th step, decided
        at the step's first moment, and any step where a change signal fired."""
        if self._decided_for != step:
            self._decided_for = step
            last = self.measured_step
            self._measure_this = self.every_step or last is None or step - last >= self.sample_every
            if self._measure_this:
                self.measured_step = step
        return self._measure_this

    def measure_rest_of(self, step: int) -> None:
        """A change signal fired within ``step``: its carried figures are stale, measure the rest
        (from its first moment on, where that moment found it: it is decided here)."""
        if self._decided_for != step or not self._measure_this:
            self._decided_for = step
            self._measure_this = True
            self.measured_step = step

    def step_done(self, step: int, step_time: float | None) -> None:
        """Step ``step`` was recorded ``step_time`` seconds after the previous one."""
        measured = self.measure_cpu > 0
        if measured:
            costs = self._walk_costs
            costs.append(self.measure_cpu)
            del costs[:-5]
            # the median of the last measured steps: one that met a garbage-collector pass is not typical
            self.act_cost = sorted(costs)[len(costs) // 2]
            self.measure_cpu = 0.0
        if step_time is None:
            return
        # the median of recent steps: an evaluation or checkpoint pause must not widen the budget
        times = self._step_times
        times.append(step_time)  # (the oldest of STEP_TIMES_KEPT drops out)
        # the median moves slowly: taken again every few steps (and after a measured one)
        if measured or step < ADAPT_EVERY * 4 or step % ADAPT_EVERY == 0:
            self.step_time_avg = sorted(times)[len(times) // 2]
            self._adapt()

    def book_record(self, seconds: float) -> None:
        """The CPU of the record of the measured step just done (its figures are new: the record
        is built and encoded whole), part of that step's cost."""
        costs = self._walk_costs
        if costs:
            costs[-1] += seconds
            self.act_cost = sorted(costs)[len(costs) // 2]
            self._adapt()

    def _adapt(self) -> None:
        """Measure the per-tensor figures only as often as fits the overhead budget."""
        if self.every_step or not self.step_time_avg or self.act_cost <= 0:
            return
        budget = self.overhead_budget * self.step_time_avg
        every = max(1, min(1000, math.ceil(self.act_cost / budget))) if budget > 0 else 1
        current = self.sample_every
        if every > current:  # wider at once (the budget holds), with room: a step time wobbling
            self.sample_every = min(1000, math.ceil(every * SAMPLE_EVERY_ROOM))  # by a few percent must not
        elif every * SAMPLE_EVERY_SLACK < current:  # move it back and forth (each change is a new record)
            self.sample_every = every
        recount = self.recount_cost + self.state_recount_cost
        self.recount_every = max(PARAM_RECOUNT_EVERY, math.ceil(recount / (RECOUNT_BUDGET * self.step_time_avg)))
