"""Zero-code start: the sitecustomize that `memtop train` puts on PYTHONPATH calls :func:`arm`.

Nothing is imported until the user's script imports torch: a meta-path watcher waits for
``import torch`` to finish, then installs the hooks. Processes that never import torch (or never
step an optimizer) write nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_armed = False


def _on_torch_imported() -> None:
    try:
        from memtop.profiler import watchdog

        watchdog.start()  # under `memtop train`: if memtop dies, this training ends too
        from memtop.profiler import hooks
        from memtop.profiler.config import HookConfig
        from memtop.profiler.session import Session

        config = HookConfig.from_env()
        if config.run_dir is None:
            return
        run_dir = config.run_dir
        hooks.install(config, lambda: Session(config, run_dir))
    except Exception as exc:  # noqa: BLE001 - never break the user's import of torch
        sys.stderr.write(f"memtop: profiler hook not installed: {exc}\n")


class _TorchImportWatcher(importlib.abc.MetaPathFinder):
    """Wraps torch's loader so the hooks go in right after ``import torch`` completes."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != "torch":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            _on_torch_imported()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def arm() -> None:
    global _armed
    if _armed or os.environ.get("MEMTOP_DISABLE"):
        return
    _armed = True
    if "torch" in sys.modules:
        _on_torch_imported()
    else:
        sys.meta_path.insert(0, _TorchImportWatcher())
