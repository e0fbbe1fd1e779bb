"""Byte accounting of tensors by unique storage: parameters, gradients, optimizer state.

Every figure is a sum over *unique storages* on one device, so tied weights, views and flat
buffers (DDP gradient buckets, FSDP flat parameters) are counted once. Nothing here keeps a
tensor alive between calls: callers pass weak references or fresh lists.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

StorageKey = int  # the storage's data pointer (unique among live storages of one device)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    category: str
    bytes: int
    shape: tuple[int, ...]
    dtype: str

    def as_record(self) -> dict[str, object]:
        return {"name": self.name, "category": self.category, "bytes": self.bytes, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class CategoryTotal:
    """Unique-storage total of one category, plus its tensors at or over the size threshold."""

    bytes: int = 0
    keys: set[StorageKey] = field(default_factory=set)
    large: list[TensorInfo] = field(default_factory=list)
    stale: bool = False  # a tensor it was built to watch is gone (a parameter was replaced)


def storage_of(t: torch.Tensor) -> tuple[StorageKey, int] | None:
    """``(key, nbytes)`` of the tensor's storage, or None for tensors without one (meta, sparse…)."""
    try:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        nbytes = st.nbytes()
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return None
    if ptr == 0 and nbytes == 0:
        return None
    return ptr, nbytes


def on_device(t: torch.Tensor, device: torch.device) -> bool:
    # t.is_cpu / t.is_cuda / t.get_device() cost a fifth of building t.device
    if device.type == "cpu":
        return t.is_cpu
    if device.type == "cuda":
        return t.is_cuda and (device.index is None or t.get_device() == device.index)
    d = t.device
    return d.type == device.type and (device.index is None or d.index == device.index)


def add_tensor(
    total: CategoryTotal,
    t: torch.Tensor,
    device: torch.device,
    exclude: set[StorageKey] | None,
    name: str | None,
    category: str,
    threshold: int,
) -> None:
    """Count ``t`` into ``total`` once per storage (skipping storages in ``exclude``)."""
    if not on_device(t, device):
        return
    info = storage_of(t)
    if info is None:
        return
    key, nbytes = info
    if key in total.keys or (exclude is not None and key in exclude):
        return
    total.keys.add(key)
    total.bytes += nbytes
    if name is not None and nbytes >= threshold:
        total.large.append(TensorInfo(name, category, nbytes, tuple(t.shape), str(t.dtype)))


class ChangeFlag:
    """Set by weak-reference callbacks when a watched tensor dies (a parameter replaced, as
    densification does): the cheap signal for an exact recount, at no per-step cost."""

    def __init__(self) -> None:
        self.value = False

    def __call__(self, _ref: object) -> None:
        self.value = True


class ParamRegistry:
    """The parameters of the optimizers being watched, with names, held only by weak reference."""

    def __init__(self) -> None:
        self.changed = ChangeFlag()
        self._params: list[weakref.ref[torch.Tensor]] = []
        self._ids: set[int] = set()
        self.names: dict[int, str] = {}
        # re-reads the models' names when an unknown parameter shows up (a parameter replaced
        # mid-run, as Gaussian-splatting densification does); at most once per `generation`
        self.resolver: Callable[[], dict[int, str]] | None = None
        self.generation = 0
        self._resolved_generation = -1

    def update(self, params: Iterable[torch.Tensor]) -> None:
        for p in params:
            if id(p) not in self._ids:
                self._ids.add(id(p))
                self._params.append(weakref.ref(p, self.changed))

    def live(self) -> Iterator[torch.Tensor]:
        dead = False
        for ref in self._params:
            p = ref()
            if p is None:
                dead = True
                continue
            yield p
        if dead:
            self._params = [r for r in self._params if r() is not None]
            self._ids = {id(r()) for r in self._params}

    def name_of(self, p: torch.Tensor) -> str:
        name = self.names.get(id(p))
        if name is None and self.resolver is not None and self._resolved_generation != self.generation:
            self._resolved_generation = self.generation
            self.names = self.resolver()
            name = self.names.get(id(p))
        return name if name is not None else f"param[{tuple(p.shape)}]"

    def __len__(self) -> int:
        return len(self._params)


def optimizer_params(opt: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for group in opt.param_groups:
        for p in group["params"]:
            if isinstance(p, torch.Tensor):
                yield p


@dataclass(frozen=True)
class GradSlot:
    """A parameter whose ``.grad`` is counted each step: what its gradient's storage will weigh."""

    param: weakref.ref[torch.Tensor]
    nbytes: int  # numel x element_size: a dense gradient obeys its parameter's shape and dtype
    name: str
    large: bool


def grad_slots(
    params: Iterable[tuple[str, torch.Tensor]], device: torch.device, threshold: int, on_death: ChangeFlag | None = None
) -> list[GradSlot]:
    slots = []
    for name, p in params:
        if on_device(p, device):
            nb = p.numel() * p.element_size()
            slots.append(GradSlot(weakref.ref(p, on_death), nb, name + ".grad", nb >= threshold))
    return slots


def count_gradients(slots: Iterable[GradSlot], device: torch.device, threshold: int) -> CategoryTotal:
    """Bytes of the ``.grad`` present now; runs every step, so the common case costs one attribute read.

    A dense gradient that is not a view owns a storage of exactly its parameter's bytes (autograd
    keeps gradients to their parameter's layout), so its size comes from the slot. Views (DDP
    gradient buckets) and sparse gradients take the storage path, where shared storages count once.
    """
    total = CategoryTotal()
    nbytes_sum = 0
    for slot in slots:
        p = slot.param()
        if p is None:
            total.stale = True
            continue
        g = p.grad
        if g is None:
            continue
        if g.is_sparse or g._is_view():
            before = total.bytes
            if g.is_sparse:
                total.bytes += g._values().nbytes + g._indices().nbytes
            else:
                add_tensor(total, g, device, None, slot.name, "gradients", threshold)
            nbytes_sum += total.bytes - before
            total.bytes = before
            continue
        nbytes_sum += slot.nbytes
        if slot.large:
            total.large.append(TensorInfo(slot.name, "gradients", slot.nbytes, tuple(g.shape), str(g.dtype)))
    total.bytes = nbytes_sum
    return total


def count_optimizer_state(
    optimizers: Iterable[tuple[str, torch.optim.Optimizer]],
    registry: ParamRegistry,
    device: torch.device,
    exclude: set[StorageKey],
    threshold: int,
) -> CategoryTotal:
    total = CategoryTotal()
    for opt_name, opt in optimizers:
        for p, state in opt.state.items():
            if not isinstance(state, dict):
                continue
            pname = registry.name_of(p) if isinstance(p, torch.Tensor) else str(p)
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    add_tensor(total, value, device, exclude, f"{opt_name}.state[{pname}].{key}", "optimizer_state", threshold)
    return total
