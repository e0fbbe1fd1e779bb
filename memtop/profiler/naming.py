"""Find the models in the process and give tensors their real names.

The models are every live root ``nn.Module`` holding tensors (not only the ones the optimizer
owns: frozen teachers, EMA copies and half-precision models behind fp32 master weights hold
memory too), found by one scan of the collector's objects at the first step and again when a new
optimizer shows up, plus modules bound to the main script's globals later on. Each root is named
after the main script's global that holds it (``model``, ``teacher``…), else ``model`` for the
optimizer's model and its class name for the others. Only weak references are kept.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterable

import torch
from torch import nn


def _root_modules(modules: list[nn.Module]) -> list[nn.Module]:
    children: set[int] = set()
    for m in modules:
        for c in m._modules.values():
            if c is not None:
                children.add(id(c))
    return [m for m in modules if id(m) not in children]


def _has_tensors(m: nn.Module) -> bool:
    try:
        return next(iter(m.parameters()), None) is not None or next(iter(m.buffers()), None) is not None
    except RuntimeError:
        return False


def scan_live() -> tuple[list[torch.optim.Optimizer], list[nn.Module]]:
    """Every live optimizer, and every live root module that holds parameters or buffers.

    Models no optimizer owns hold memory too (a frozen teacher, an EMA copy, the half-precision
    model behind fp32 master weights), so every root module counts. Unreachable garbage that the
    collector has not freed yet would be counted as live, so one collection runs first. Called
    once at the start and when a new optimizer or model shows up; keeps nothing.
    """
    gc.collect()
    module_type, opt_type = nn.Module, torch.optim.Optimizer
    modules: list[nn.Module] = []
    optimizers: list[torch.optim.Optimizer] = []
    # type() rather than isinstance(): isinstance consults __class__, which some lazy proxies warn on
    for o in gc.get_objects():
        t = type(o)
        if issubclass(t, module_type):
            modules.append(o)
        elif issubclass(t, opt_type):
            optimizers.append(o)
    return optimizers, [m for m in _root_modules(modules) if _has_tensors(m)]


def main_modules() -> list[nn.Module]:
    """Modules bound to the main script's globals (cheap: one dict), to catch models made later."""
    main = sys.modules.get("__main__")
    namespace = getattr(main, "__dict__", None)
    if not isinstance(namespace, dict):
        return []
    return [v for v in list(namespace.values()) if isinstance(v, nn.Module)]


def live_graph_roots() -> list[object]:
    """grad_fn nodes of every live tensor (at an OOM, to measure the forward pass that failed).

    Scans the garbage collector's objects once; used only when the process is out of memory,
    and keeps nothing afterwards.
    """
    tensor_type = torch.Tensor
    roots: list[object] = []
    seen: set[int] = set()
    for o in gc.get_objects():
        if issubclass(type(o), tensor_type):
            node = o.grad_fn
            if node is not None and id(node) not in seen:
                seen.add(id(node))
                roots.append(node)
    return roots


def find_optimizers() -> list[torch.optim.Optimizer]:
    """Live optimizers (zero-code: before the first step, the backward pass needs to know them)."""
    opt_type = torch.optim.Optimizer
    return [o for o in gc.get_objects() if issubclass(type(o), opt_type)]


def variable_name_for(obj: object, default: str) -> str:
    """The name of a module-level variable of the main script bound to ``obj``, else ``default``.

    Only module dictionaries are searched. Function locals are not: before Python 3.13, reading a
    frame's ``f_locals`` leaves a snapshot on the frame that keeps every local of that moment
    alive, and emptying it would also empty a dict the program got from ``locals()``.
    """
    main = sys.modules.get("__main__")
    namespace = getattr(main, "__dict__", None)
    if isinstance(namespace, dict):
        for name, value in list(namespace.items()):
            if value is obj and isinstance(name, str) and not name.startswith("_"):
                return name
    return default


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

    def has(self, module: nn.Module) -> bool:
        return any(r() is module for _, r in self._roots)

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
