"""What every rule shares: thresholds, the reason's wording, the new command line, the code-change
fallback, and the peak arithmetic of :mod:`memtop.analyzers.whatif`."""

from __future__ import annotations

from memtop.analyzers import cmdline, whatif
from memtop.analyzers.facts import Facts
from memtop.analyzers.roles import HALF_NAMES, is_on
from memtop.units import fmt_bytes, fmt_pct

MiB = 1 << 20
MIN_SHARE = 0.05  # a change that saves less than this share of the peak is not worth a line
PLENTIFUL = 0.5  # memory is plentiful when the peak uses at most this share of the device


def of_peak(f: Facts, nbytes: int) -> str:
    return f"{fmt_pct(100 * f.share(nbytes))} of the peak ({fmt_bytes(nbytes)})"


def cmd(f: Facts, args: list[str], env: dict[str, str] | None = None) -> tuple[str, tuple[str, ...]]:
    argv = [*f.head, *args]
    return cmdline.join(argv, env), tuple(argv)


def no_flag(f: Facts, what: str) -> str:
    """Why a change is a code change: the script has no such flag, or its flags are unknown."""
    if not f.flags:
        return f"memtop could not read the script's flags, so this is the change in code; if the script has a {what} flag, use it"
    return f"the script has no {what} flag"


def worth(f: Facts, saving: float) -> bool:
    return f.level > 0 and saving >= MIN_SHARE * f.level and saving > 0


def amp_state(f: Facts) -> bool | None:
    """Whether mixed precision is already on (None: cannot tell)."""
    mp = f.roles.get("mixed_precision")
    if mp is not None:
        state = is_on(mp)
        if state:
            return True
        dt = f.roles.get("amp_dtype")
        return False if state is False and dt is None else state
    dt = f.roles.get("amp_dtype")
    if dt is not None and dt.value is not None:
        return str(dt.value).lower() in HALF_NAMES
    return None


def forward_only(**factors: float) -> whatif.Change:
    """A change that scales categories at the end of the forward pass and leaves the step end alone."""

    def change(point: str, m: whatif.Moment) -> dict[str, float]:
        return whatif.scaled(m, **factors) if whatif.is_forward(point) else dict(m)

    return change


def everywhere(**factors: float) -> whatif.Change:
    """A change that scales categories at every moment (model state: parameters, gradients, optimizer state)."""

    def change(point: str, m: whatif.Moment) -> dict[str, float]:
        return whatif.scaled(m, **factors)

    return change


def peak_basis(f: Facts) -> str:
    """How the peak is measured, for the assumption text."""
    return "the allocator peak" if f.has_allocator else "the tracked peak (CPU: no allocator counter)"
