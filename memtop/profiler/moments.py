"""The moments of one step: what each category weighed at the end of a forward pass and at the
end of the optimizer step, which moment had the most memory, and each category's high-water mark.

A step considers one composition per moment (several forward ends where backward runs several
times: gradient accumulation, a GAN, reentrant checkpointing); the record keeps the heaviest per
moment and the heaviest overall (allocated bytes where the device counts them, else the tracked
tensors).
"""

from __future__ import annotations

from memtop.profiler.accounting import CategoryTotal

CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations")


class Composition:
    """The categories at one moment of a step (never changed once considered, except a walked
    forward end that a later walk of the same step finds older tensors for)."""

    __slots__ = ("point", "allocated", "parameters", "gradients", "optimizer_state", "activations")

    def __init__(
        self,
        point: str,
        allocated: int | None,
        parameters: CategoryTotal,
        gradients: CategoryTotal,
        optimizer_state: CategoryTotal,
        activations: CategoryTotal,
    ) -> None:
        self.point = point
        self.allocated = allocated
        self.parameters = parameters
        self.gradients = gradients
        self.optimizer_state = optimizer_state
        self.activations = activations

    @property
    def tracked(self) -> int:
        return self.parameters.bytes + self.gradients.bytes + self.optimizer_state.bytes + self.activations.bytes

    def weight(self) -> int:
        return self.allocated if self.allocated is not None else self.tracked

    def same(self, allocated: int | None, parameters: CategoryTotal, gradients: CategoryTotal, optimizer_state: CategoryTotal, activations: CategoryTotal) -> bool:
        """Whether this composition is made of exactly these figures (a carried one can be reused)."""
        return (
            self.allocated == allocated
            and self.parameters is parameters
            and self.gradients is gradients
            and self.optimizer_state is optimizer_state
            and self.activations is activations
        )


def moment_record(comp: Composition) -> dict[str, int | None]:
    return {
        "allocated": comp.allocated,
        "parameters": comp.parameters.bytes,
        "gradients": comp.gradients.bytes,
        "optimizer_state": comp.optimizer_state.bytes,
        "activations": comp.activations.bytes,
    }


class StepMoments:
    """The compositions one step has considered so far."""

    __slots__ = ("best", "moments", "highwater", "walked")

    def __init__(self) -> None:
        self.best: Composition | None = None
        self.moments: dict[str, Composition] = {}
        self.highwater = [-1, -1, -1, -1]  # CATEGORIES, in order; -1: no moment yet
        self.walked: list[tuple[int, Composition]] = []  # (root sequence number, forward end)

    def clear(self) -> None:
        """Ready for the next step (the containers are kept: a record holds copies, never these)."""
        self.best = None
        self.moments.clear()
        self.highwater[:] = (-1, -1, -1, -1)
        self.walked.clear()

    def consider(self, comp: Composition) -> None:
        weight = comp.weight()
        best = self.best
        if best is None or weight > best.weight():
            self.best = comp
        moments = self.moments
        seen = moments.get(comp.point)
        if seen is None or weight > seen.weight():
            moments[comp.point] = comp
        hw = self.highwater
        b = comp.parameters.bytes
        if b > hw[0]:
            hw[0] = b
        b = comp.gradients.bytes
        if b > hw[1]:
            hw[1] = b
        b = comp.optimizer_state.bytes
        if b > hw[2]:
            hw[2] = b
        b = comp.activations.bytes
        if b > hw[3]:
            hw[3] = b

    def add_older(self, older: list[tuple[int, int, int]]) -> int:
        """Tensors found by a later walk of this step that were alive at an earlier forward end
        (a GAN's generator graph) join that moment. Returns the largest activations figure of the
        moments that grew (0 if none)."""
        largest = 0
        for root_seq, comp in self.walked:
            acts = comp.activations
            grew = False
            for seq, key, nbytes in older:
                if seq < root_seq and key not in acts.keys:
                    acts.keys.add(key)
                    acts.bytes += nbytes
                    grew = True
            if grew:
                self.consider(comp)
                largest = max(largest, acts.bytes)
        return largest

    def highwater_record(self) -> dict[str, int]:
        hw = self.highwater
        return {"parameters": hw[0], "gradients": hw[1], "optimizer_state": hw[2], "activations": hw[3]}
