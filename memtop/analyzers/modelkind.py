"""What kind of model and optimizer a run trains, from the class names the hook records once.

The rules ask this before they speak: checkpointing every block assumes transformer-like blocks,
8-bit Adam assumes an Adam-family optimizer. Runs recorded before the hook wrote these names (or by
a hook that could not) read as unknown, and the rules then fall back to their general form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memtop.analyzers.series import RankSeries

_ATTENTION = re.compile(r"attention|attn|transformer\w*layer|multihead", re.IGNORECASE)
_RECURRENT = re.compile(r"^(LSTM|GRU|RNN|LSTMCell|GRUCell|RNNCell)$")
_CONV = re.compile(r"^Conv(Transpose)?[123]d$")
_ADAM = re.compile(r"adam|lamb", re.IGNORECASE)


@dataclass(frozen=True)
class ModelKind:
    kinds: frozenset[str] | None = None  # module class names; None: not recorded
    optimizer: tuple[str, ...] | None = None  # the optimizer's class and its bases; None: not recorded

    @property
    def known(self) -> bool:
        return self.kinds is not None

    @property
    def transformer(self) -> bool | None:
        """Attention blocks (None: unknown)."""
        return None if self.kinds is None else any(_ATTENTION.search(k) for k in self.kinds)

    @property
    def recurrent(self) -> bool | None:
        return None if self.kinds is None else any(_RECURRENT.match(k) for k in self.kinds)

    @property
    def convolutional(self) -> bool | None:
        return None if self.kinds is None else any(_CONV.match(k) for k in self.kinds)

    @property
    def adam_family(self) -> bool | None:
        """Adam, AdamW, NAdam, RAdam, Adamax, LAMB or a subclass (None: unknown)."""
        return None if self.optimizer is None else any(_ADAM.search(n) for n in self.optimizer)

    @property
    def optimizer_name(self) -> str | None:
        return self.optimizer[0] if self.optimizer else None

    def describe(self) -> str:
        """``"a transformer"``, ``"an LSTM"``, ``"a conv net"``, ``"an MLP"`` (for reasons and silences)."""
        if self.kinds is None:
            return "an unknown model"
        if self.transformer:
            return "a transformer"
        if self.recurrent:
            return "a recurrent net (" + ", ".join(sorted(k for k in self.kinds if _RECURRENT.match(k))) + ")"
        if self.convolutional:
            return "a conv net"
        return "an MLP-like model"


def model_kind(series: dict[int, RankSeries]) -> ModelKind:
    """From the first step record of any rank that holds ``model_kinds`` / ``optimizer``."""
    kinds: tuple[str, ...] | None = None
    optimizer: tuple[str, ...] | None = None
    for s in series.values():
        for rec in s.records[:4]:
            kinds = kinds or rec.model_kinds
            optimizer = optimizer or rec.optimizer
        if kinds is not None and optimizer is not None:
            break
    return ModelKind(frozenset(kinds) if kinds is not None else None, optimizer)
