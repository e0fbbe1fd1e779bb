"""Find the model(s) behind an optimizer's parameters and give tensors their real names.

Zero-code mode has only the optimizer: the models are found once, at the first step, among the
live ``nn.Module`` objects (the roots that own the optimizer's parameters), and each root is named
after the variable that holds it in the training loop's frame (``model``, ``net``…), else
``model``. Only weak references are kept.
"""

from __future__ import annotations

import gc
import inspect
import sys
import weakref
from collections.abc import Iterable
from types import FrameType

import torch
from torch import nn

_SKIP_NAMES = {"self", "cls", "module", "m", "mod"}


def find_root_modules(param_ids: set[int]) -> list[nn.Module]:
    """Root modules (not a child of another module) that own any of ``param_ids``."""
    module_type = nn.Module
    # type() rather than isinstance(): isinstance consults __class__, which some lazy proxies warn on
    modules = [o for o in gc.get_objects() if issubclass(type(o), module_type)]
    children: set[int] = set()
    for m in modules:
        for c in m._modules.values():
            if c is not None:
                children.add(id(c))
    roots = []
    for m in modules:
        if id(m) in children:
            continue
        try:
            if any(id(p) in param_ids for p in m.parameters()):
                roots.append(m)
        except RuntimeError:
            continue
    return roots


def find_optimizers() -> list[torch.optim.Optimizer]:
    """Live optimizers (zero-code: before the first step, the backward pass needs to know them)."""
    opt_type = torch.optim.Optimizer
    return [o for o in gc.get_objects() if issubclass(type(o), opt_type)]


def frame_locals(frame: FrameType) -> list[tuple[str, object]]:
    """A frame's local variables, without leaving anything alive behind.

    Before Python 3.13, reading ``f_locals`` of a function frame stores a snapshot dict on the
    frame that keeps every local of that moment alive until the function returns (old batches,
    whole autograd graphs). The snapshot is emptied after reading; tracers and ``locals()``
    refresh it from the real locals before every use, so nothing the program sees changes. On
    3.13+ ``f_locals`` is a live proxy without a snapshot, and must not be cleared.
    """
    local_map = frame.f_locals
    items = list(local_map.items())
    if sys.version_info < (3, 13) and frame.f_code.co_flags & inspect.CO_OPTIMIZED and local_map is not frame.f_globals:
        local_map.clear()
    return items


def variable_name_for(obj: object, frame: FrameType | None, default: str) -> str:
    """The name of a variable bound to ``obj`` in ``frame`` or its callers (module level included)."""
    f = frame
    while f is not None:
        for name, value in frame_locals(f):
            if value is obj and name not in _SKIP_NAMES and not name.startswith("_"):
                return name
        f = f.f_back
    return default


def caller_frame() -> FrameType | None:
    """The first frame outside torch and memtop (the user's training loop)."""
    try:
        f: FrameType | None = sys._getframe(1)
    except ValueError:
        return None
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if not (mod.startswith("torch") or mod.startswith("memtop")):
            return f
        f = f.f_back
    return None


def unique_names(names: Iterable[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 1
            out.append(n)
    return out


class ModelRegistry:
    """Root modules by weak reference, with their display names and tensor names."""

    def __init__(self) -> None:
        self._roots: list[tuple[str, weakref.ref[nn.Module]]] = []

    def set_roots(self, roots: list[tuple[str, nn.Module]]) -> None:
        names = unique_names(n for n, _ in roots)
        self._roots = [(n, weakref.ref(m)) for n, (_, m) in zip(names, roots, strict=True)]

    def add_root(self, name: str, module: nn.Module) -> None:
        if any(r() is module for _, r in self._roots):
            return
        taken = {n for n, _ in self._roots}
        base, i = name, 1
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        self._roots.append((name, weakref.ref(module)))

    def roots(self) -> list[tuple[str, nn.Module]]:
        out = []
        for name, ref in self._roots:
            m = ref()
            if m is not None:
                out.append((name, m))
        return out

    def __bool__(self) -> bool:
        return bool(self._roots)

    def param_names(self) -> dict[int, str]:
        names: dict[int, str] = {}
        for root_name, m in self.roots():
            for pname, p in m.named_parameters(remove_duplicate=True):
                names.setdefault(id(p), f"{root_name}.{pname}")
            for bname, b in m.named_buffers(remove_duplicate=True):
                names.setdefault(id(b), f"{root_name}.{bname}")
        return names

    def named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """Parameters and buffers of every root, each tensor object once."""
        out: list[tuple[str, torch.Tensor]] = []
        seen: set[int] = set()
        for root_name, m in self.roots():
            for pname, p in m.named_parameters(remove_duplicate=True):
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((f"{root_name}.{pname}", p))
            for bname, b in m.named_buffers(remove_duplicate=True):
                if id(b) not in seen:
                    seen.add(id(b))
                    out.append((f"{root_name}.{bname}", b))
        return out
