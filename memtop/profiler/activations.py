"""Activations: the tensors autograd saved for backward, read off the graph when backward starts.

The graph is walked from the backward roots through ``next_functions``; each node's saved tensors
are read through its ``_raw_saved_*`` attributes and ``SavedTensor.data``, which returns the stored
tensor (or the object a saved-tensors hook packed) *without* calling any unpack hook, so
checkpointed regions are never recomputed and offloading hooks are never triggered. Nothing is
kept after the walk.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from memtop.profiler.accounting import CategoryTotal, StorageKey, TensorInfo, on_device, storage_of

_RAW_PREFIX = "_raw_saved_"
_attr_cache: dict[type, tuple[str, ...]] = {}


def _saved_attrs(node_type: type) -> tuple[str, ...]:
    names = _attr_cache.get(node_type)
    if names is None:
        names = tuple(n for n in dir(node_type) if n.startswith(_RAW_PREFIX))
        _attr_cache[node_type] = names
    return names


def _tensors_in(packed: object, depth: int = 0) -> Iterable[torch.Tensor]:
    """Tensors inside whatever a saved-tensors hook returned (tensor, tuple of tensors…)."""
    if isinstance(packed, torch.Tensor):
        yield packed
    elif depth < 2 and isinstance(packed, (tuple, list)):
        for item in packed:
            yield from _tensors_in(item, depth + 1)


def _checkpoint_inputs(saved: object, frames_seen: set[int]) -> tuple[list[torch.Tensor], object | None]:
    """For a tensor packed by non-reentrant checkpointing: the segment's kept inputs.

    ``torch.utils.checkpoint`` keeps a checkpointed segment's inputs on its frame, which the
    packed tensor's unpack hook holds in its closure: as ``frame.saved_args`` (SavedTensors, in
    recent torch) or in a separate autograd node ``frame.input_saver`` (older torch) that
    ``next_functions`` does not reach. Reading them unpacks nothing and recomputes nothing.
    Returns (tensors, extra node to walk).
    """
    hook = getattr(saved, "unpack_hook", None)
    for cell in getattr(hook, "__closure__", None) or ():
        try:
            frame = cell.cell_contents
        except ValueError:
            continue
        if not hasattr(frame, "recompute_fn") or id(frame) in frames_seen:
            continue
        frames_seen.add(id(frame))
        tensors: list[torch.Tensor] = []
        for arg in getattr(frame, "saved_args", None) or ():
            if isinstance(arg, torch.Tensor):
                tensors.append(arg)
                continue
            try:
                data = getattr(arg, "data", None)
            except RuntimeError:
                continue
            if isinstance(data, torch.Tensor):
                tensors.append(data)
        saver = getattr(frame, "input_saver", None)
        return tensors, getattr(saver, "grad_fn", None)
    return [], None


def _base_refs(t: torch.Tensor) -> tuple[torch.Tensor | None, int]:
    """The view's base tensor and its Python reference count, as seen from inside this function."""
    base = t._base
    if base is None:
        return None, 0
    return base, sys.getrefcount(base)


# the count of a base that nothing in Python holds (its wrapper made afresh by ``_base``)
_UNHELD_BASE_REFS = _base_refs(torch.empty(2)[1:])[1]


def resident_view_bytes(t: torch.Tensor) -> int | None:
    """Bytes of a saved view of a tensor the program holds anyway, else None.

    A batch sliced from a dataset kept whole in one tensor (or a window of a large cache) shares
    that tensor's storage; the graph adds only the view's own elements, since the storage lives on
    without it. A view whose base autograd made in this forward pass, or that nothing in Python
    still holds, keeps its whole storage alive only through the graph: None (count the storage).
    """
    if not t._is_view():
        return None
    base, refs = _base_refs(t)
    if base is None or base.grad_fn is not None or refs <= _UNHELD_BASE_REFS:
        return None
    return t.numel() * t.element_size()


@dataclass
class GraphWalk:
    total: CategoryTotal = field(default_factory=CategoryTotal)
    nodes: int = 0
    # (sequence number of the node, storage key, bytes) of tensors saved by nodes older than
    # ``older_than``: they were alive at an earlier moment of the step too (see sequence_nr)
    older: list[tuple[int, StorageKey, int]] = field(default_factory=list)


def sequence_nr(node: object) -> int | None:
    """Autograd numbers nodes in creation order (per thread). A node that is alive now and older
    than an earlier moment's root existed at that moment, with the tensors it saved: that is how a
    graph no longer reachable from the backward roots (a GAN's generator graph, held by ``fake``
    while the discriminator's loss backprops from ``fake.detach()``) is added to that moment."""
    fn = getattr(node, "_sequence_nr", None)
    try:
        return int(fn()) if fn is not None else None
    except (RuntimeError, TypeError, ValueError):
        return None


def saved_tensors_of_graph(
    roots: Iterable[object],
    device: torch.device,
    exclude: set[StorageKey],
    threshold: int,
    max_nodes: int = 2_000_000,
    older_than: int | None = None,
) -> GraphWalk:
    """Unique storages saved for backward in the graph under ``roots`` (minus ``exclude``).

    With ``older_than``, the tensors of nodes created before that sequence number are also listed
    in ``older`` (the walk then reads each node's sequence number: only in a step's later walks).
    """
    walk = GraphWalk()
    total = walk.total
    stack = [r for r in roots if r is not None]
    visited: set[int] = set()
    views_seen: set[tuple[int, int, int]] = set()
    frames_seen: set[int] = set()
    keep_alive: list[object] = []  # node wrappers must outlive the walk so ids stay unique
    while stack:
        node = stack.pop()
        nid = id(node)
        if nid in visited:
            continue
        visited.add(nid)
        keep_alive.append(node)
        walk.nodes += 1
        if walk.nodes > max_nodes:
            break
        node_type = type(node)
        attrs = _saved_attrs(node_type)
        node_seq = sequence_nr(node) if older_than is not None and attrs else None
        old_node = node_seq is not None and older_than is not None and node_seq < older_than
        for attr in attrs:
            try:
                raw = getattr(node, attr)
            except (RuntimeError, AttributeError):
                continue  # freed (backward already ran) or not applicable
            items = raw if isinstance(raw, (tuple, list)) else (raw,)
            for saved in items:
                if saved is None:
                    continue
                try:
                    data = saved.data
                except (RuntimeError, AttributeError):
                    continue
                # (tensor, kept by checkpointing?): names are built only for the large ones
                found: list[tuple[torch.Tensor, bool]] = [(t, False) for t in _tensors_in(data)]
                if not isinstance(data, torch.Tensor):
                    kept, inputs_node = _checkpoint_inputs(saved, frames_seen)
                    if inputs_node is not None:
                        stack.append(inputs_node)
                    found.extend((t, True) for t in kept)
                for t, from_checkpoint in found:
                    if not on_device(t, device):
                        continue
                    info = storage_of(t)
                    if info is None:
                        continue
                    key, nbytes = info
                    if key in exclude:
                        continue
                    if key in total.keys:
                        if old_node and node_seq is not None:
                            walk.older.append((node_seq, key, nbytes))
                        continue
                    view_bytes = resident_view_bytes(t)
                    if view_bytes is not None:
                        view_key = (key, t.data_ptr(), t.numel())
                        if view_key in views_seen:
                            continue
                        views_seen.add(view_key)
                        total.bytes += view_bytes
                        nbytes = view_bytes
                    else:
                        total.keys.add(key)
                        total.bytes += nbytes
                        if old_node and node_seq is not None:
                            walk.older.append((node_seq, key, nbytes))
                    if nbytes >= threshold:
                        name = "saved[checkpoint].input" if from_checkpoint else f"saved[{node_type.__name__}].{attr[len(_RAW_PREFIX) :]}"
                        total.large.append(TensorInfo(name, "activations", nbytes, tuple(t.shape), str(t.dtype)))
        try:
            nexts = node.next_functions  # type: ignore[attr-defined]
        except AttributeError:
            continue
        for nxt, _ in nexts:
            if nxt is not None and id(nxt) not in visited:
                stack.append(nxt)
    return walk


def backward_roots(t_outputs: object) -> list[object]:
    """grad_fn nodes of the tensors (or GradientEdges) handed to the autograd engine."""
    roots: list[object] = []
    items = t_outputs if isinstance(t_outputs, (tuple, list)) else (t_outputs,)
    for t in items:
        if isinstance(t, torch.Tensor):
            if t.grad_fn is not None:
                roots.append(t.grad_fn)
        else:
            node = getattr(t, "node", None)
            if node is not None:
                roots.append(node)
    return roots


def has_backward_root(t_outputs: object) -> bool:
    """Whether :func:`backward_roots` would find any (without making the list: every step asks)."""
    items = t_outputs if isinstance(t_outputs, (tuple, list)) else (t_outputs,)
    for t in items:
        if isinstance(t, torch.Tensor):
            if t.grad_fn is not None:
                return True
        elif getattr(t, "node", None) is not None:
            return True
    return False
