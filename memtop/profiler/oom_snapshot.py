"""The categories at an out-of-memory error: everything counted afresh, the failed forward pass's
graph found among the live tensors (the error is rare; this may take a while)."""

from __future__ import annotations

from memtop.profiler import naming
from memtop.profiler.activations import saved_tensors_of_graph
from memtop.profiler.backends import AllocatorState, Backend
from memtop.profiler.moments import Composition
from memtop.profiler.static_counts import StaticCounts


def snapshot(counts: StaticCounts, step: int, backend: Backend, threshold: int) -> tuple[dict[str, int | None], Composition, AllocatorState]:
    """(the record's ``categories``, the composition, the allocator's state) now."""
    counts.forget()
    params, state = counts.static(step)
    grads = counts.gradients(step)
    roots = naming.live_graph_roots()
    acts = saved_tensors_of_graph(roots, counts.watched.device, params.keys | grads.keys | state.keys, threshold).total
    alloc = backend.state()
    comp = Composition("oom", alloc.allocated, params, grads, state, acts)
    cats: dict[str, int | None] = {
        "parameters": params.bytes,
        "gradients": grads.bytes,
        "optimizer_state": state.bytes,
        "activations": acts.bytes,
        "other": max(0, alloc.allocated - comp.tracked) if alloc.allocated is not None else None,
    }
    return cats, comp, alloc
