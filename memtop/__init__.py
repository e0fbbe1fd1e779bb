"""memtop: where did my GPU memory go, and which flag do I change?

``memtop.profile(model, optimizer)`` and ``memtop.stage(name)`` are imported lazily so that
``import memtop`` (and the CLI) never pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memtop.version import __version__

if TYPE_CHECKING:
    from memtop.profiler.api import profile, stage

__all__ = ["__version__", "profile", "stage"]


def __getattr__(name: str) -> Any:
    if name in ("profile", "stage"):
        from memtop.profiler import api

        return getattr(api, name)
    raise AttributeError(f"module 'memtop' has no attribute {name!r}")
