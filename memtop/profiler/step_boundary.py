"""Which optimizer step ends a memtop step, where several optimizers step in turn.

A GAN steps its discriminator's optimizer, then its generator's: the step ends after the last of
them, once it has stepped between the first optimizer's last two steps. Decided once, within the
first steps: an optimizer that steps now and then never ends the steps.
"""

from __future__ import annotations

PRIMARY_SETTLES_AFTER = 8  # optimizer steps after which the optimizer that ends steps is fixed


class StepBoundary:
    def __init__(self) -> None:
        self._primary: int | None = None  # id() of the optimizer whose step ends a memtop step
        self._others_now: list[int] = []  # other optimizers that stepped since the primary's last step
        self._others_before: list[int] = []  # … and between its two steps before
        self._settled = False

    def ends_step(self, opt_id: int, steps_seen: int) -> bool:
        """The optimizer ``opt_id`` finished its step; ``steps_seen`` memtop steps so far ended by one."""
        if self._primary is None:
            self._primary = opt_id
        if opt_id != self._primary:
            if opt_id not in self._others_now:
                self._others_now.append(opt_id)
            return False
        if self._others_now or self._others_before:
            regular = [o for o in self._others_now if o in self._others_before]
            self._others_before, self._others_now = self._others_now, []
            if regular and not self._settled:
                self._primary = regular[-1]
                self._settled = True
                return False
        if steps_seen >= PRIMARY_SETTLES_AFTER:
            self._settled = True
        return True

    def alone(self, opt_id: int) -> bool:
        """Whether ``opt_id`` ends every step and no other optimizer steps between."""
        return self._settled and self._primary == opt_id and not self._others_now and not self._others_before
