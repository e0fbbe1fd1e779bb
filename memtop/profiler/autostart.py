"""Zero-code start: the sitecustomize that `memtop train` puts on PYTHONPATH calls :func:`arm`.

Nothing is imported until the user's script imports torch: a meta-path watcher waits for
``import torch`` to finish, then installs the hooks. Processes that never import torch (or never
step an optimizer) write nothing.

The user's own modules win their names. The sitecustomize loads memtop by file location and hands
the package to :func:`adopt_package`, which takes the top-level name ``memtop`` out of
``sys.modules`` again (memtop's submodules stay there under their dotted names, which is all
memtop's own ``from memtop.x import y`` statements need). The user's ``import memtop`` then
resolves on their ``sys.path`` as without memtop: to their own ``memtop.py`` if they have one,
else to this package, which :class:`_OwnPackageFinder` hands back as the same module object (so
``memtop.profile`` joins the running hook). The imports memtop makes when torch arrives run with
its package briefly restored (:func:`_own_package`); memtop's code imported later must not import
``memtop`` by its top-level name alone. Known limit: a user *package* named ``memtop`` whose
submodules share a dotted name with memtop's own (``memtop.runs``, ``memtop.profiler``) gets
memtop's for those, since sys.modules holds them by those names.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

_armed = False
_package: ModuleType | None = None  # memtop's own top-level package while its name is hidden


def _same_file(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class _ExistingModuleLoader(importlib.abc.Loader):
    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self._module

    def exec_module(self, module: ModuleType) -> None:
        return None  # already executed when the hook loaded it


class _OwnPackageFinder(importlib.abc.MetaPathFinder):
    """``import memtop`` by anyone: theirs if their sys.path finds another one, else ours as loaded."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        global _package
        package = _package
        if fullname != "memtop" or package is None:
            return None
        found = importlib.machinery.PathFinder.find_spec(fullname, None)
        if found is not None and not _same_file(found.origin, package.__file__):
            return None  # the user's own memtop: it loads as without memtop
        _remove_finder()
        _package = None
        spec = importlib.util.spec_from_loader("memtop", _ExistingModuleLoader(package), origin=package.__file__, is_package=True)
        if spec is not None:
            spec.submodule_search_locations = list(getattr(package, "__path__", []))
            spec.has_location = True
        return spec


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _OwnPackageFinder)]


def adopt_package(package: ModuleType, previous: ModuleType | None = None) -> None:
    """Take memtop's top-level name out of sys.modules (restoring ``previous``) until someone imports it."""
    global _package
    if sys.modules.get("memtop") is package:
        if previous is not None:
            sys.modules["memtop"] = previous
        else:
            del sys.modules["memtop"]
    _package = package
    _remove_finder()
    sys.meta_path.insert(0, _OwnPackageFinder())


@contextlib.contextmanager
def _own_package() -> Iterator[None]:
    """memtop's own top-level package under its name while memtop imports its modules."""
    package = _package
    if package is None or sys.modules.get("memtop") is package:
        yield
        return
    theirs = sys.modules.get("memtop")
    sys.modules["memtop"] = package
    try:
        yield
    finally:
        if sys.modules.get("memtop") is package:
            if theirs is not None:
                sys.modules["memtop"] = theirs
            else:
                del sys.modules["memtop"]


def _on_torch_imported() -> None:
    try:
        with _own_package():
            from memtop.profiler import watchdog

            watchdog.start()  # under `memtop train`: if memtop dies, this training ends too
            from memtop.profiler import hooks
            from memtop.profiler.config import HookConfig
            from memtop.profiler.session import Session

        config = HookConfig.from_env()
        if config.run_dir is None:
            return
        from memtop.profiler.device_cap import apply_from_env

        apply_from_env(sys.modules["torch"])  # memtop train --device-memory
        run_dir = config.run_dir
        hooks.install(config, lambda: Session(config, run_dir))
        # a forked child (os.fork, multiprocessing's fork start method) starts a session of its
        # own at its first step: its records go to a file of its own, its steps count from 1
        os.register_at_fork(after_in_child=lambda: hooks.set_session(None) if hooks.is_zero_code() else None)
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
