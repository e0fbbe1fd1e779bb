"""What the session watches: the optimizers, the models (found wherever they are) and the device.

Only weak references are kept. Models are found by one scan of the live objects at the first
step, again when a new optimizer appears (at most every 100 steps), and among the main script's
globals at every exact recount (a model made later: an EMA copy). ``generation`` grows whenever
something new is watched: the cheap signal for the counts to start again.
"""

from __future__ import annotations

import weakref

import torch

from memtop.profiler import naming
from memtop.profiler.accounting import ParamRegistry, optimizer_params

RESCAN_AT_MOST_EVERY = 100  # steps between scans of live objects (a script that makes an optimizer per step)


class Watched:
    def __init__(self) -> None:
        self.params = ParamRegistry()
        self.models = naming.ModelRegistry()
        self.optimizer_refs: list[tuple[str, weakref.ref[torch.optim.Optimizer]]] = []
        self._by_id: dict[int, weakref.ref[torch.optim.Optimizer]] = {}  # id -> ref: "watched already?" per step
        self.generation = 0
        self._names_resolved = False
        self.discovered = False
        self._rescan = True  # look for models among live objects at the next recount
        self._scanned_at: int | None = None  # the step of the last scan
        self._device: torch.device | None = None

    def _changed(self) -> None:
        self._names_resolved = False
        self.generation += 1

    def watch_optimizer(self, opt: torch.optim.Optimizer, name: str | None = None) -> None:
        known = self._by_id.get(id(opt))
        if known is not None and known() is opt:
            return
        if any(r() is opt for _, r in self.optimizer_refs):
            return
        taken = {n for n, _ in self.optimizer_refs}
        base = name or "optimizer"
        label, i = base, 1
        while label in taken:
            i += 1
            label = f"{base}_{i}"
        ref = weakref.ref(opt)
        self.optimizer_refs.append((label, ref))
        self._by_id[id(opt)] = ref
        self.params.update(optimizer_params(opt))
        self._changed()
        self._rescan = self.discovered  # a new optimizer after the first scan: its model may be new too

    def watch_model(self, model: torch.nn.Module, name: str = "model") -> None:
        self.models.add_root(name, model)
        self._changed()

    def optimizers(self) -> list[tuple[str, torch.optim.Optimizer]]:
        out = []
        for name, ref in self.optimizer_refs:
            opt = ref()
            if opt is not None:
                out.append((name, opt))
        return out

    def any(self) -> bool:
        return bool(self.optimizer_refs or self.models)

    def discover(self, step: int) -> bool:
        """Find the optimizers and models among live objects once. True when something is watched."""
        if not self.discovered:
            self.discovered = True
            self._scan(step)
        return bool(self.optimizer_refs or self.models)

    def _scan(self, step: int) -> None:
        """Every live optimizer and root module (one pass over the collector's objects)."""
        self._rescan = False
        self._scanned_at = step
        optimizers, modules = naming.scan_live()
        for opt in optimizers:
            self.watch_optimizer(opt)
        self._rescan = False  # watch_optimizer asked for a scan: this is it
        self._adopt(modules)

    def _adopt(self, modules: list[torch.nn.Module]) -> None:
        """Watch modules not watched yet: the optimizer's own models first, so their names win."""
        new = [m for m in modules if not self.models.has(m)]
        if not new:
            return
        owned = {id(p) for p in self.params.live()}

        def owns(m: torch.nn.Module) -> bool:
            return any(id(p) in owned for p in m.parameters())

        new.sort(key=lambda m: not owns(m))
        for m in new:
            self.models.add_root(naming.variable_name_for(m, "model" if owns(m) else type(m).__name__), m)
        self._changed()

    def ensure_names(self, step: int) -> None:
        """Before an exact recount: models made since (a rescan when asked for, the main script's
        globals), and the tensors' names."""
        if self._rescan and (self._scanned_at is None or step - self._scanned_at >= RESCAN_AT_MOST_EVERY):
            self.discovered = True
            self._scan(step)
        self._adopt(naming.main_modules())  # a model made after the scan (an EMA copy)
        if self._names_resolved:
            return
        self._names_resolved = True
        self.params.names = self.models.param_names()
        self.params.resolver = self.models.param_names

    @property
    def device(self) -> torch.device:
        device = self._device
        if device is None:
            device = self._detect_device()
            if not (self.optimizer_refs or self.models):
                return device  # nothing watched yet: decide again later
            self._device = device
        return device

    @property
    def device_settled(self) -> bool:
        return self._device is not None

    def _detect_device(self) -> torch.device:
        for p in self.params.live():
            if p.device.type == "cuda":
                return p.device
        for _, m in self.models.roots():
            for p in m.parameters():
                if p.device.type == "cuda":
                    return p.device
        return torch.device("cpu")
