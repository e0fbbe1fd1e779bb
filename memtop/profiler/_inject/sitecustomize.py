"""memtop's zero-code hook: put on PYTHONPATH by `memtop train`.

It runs the sitecustomize this one shadows (if any), then arms the profiler, which waits for
``import torch``. It must never stop the user's program from starting, and never take a name from
the user's own modules:

- memtop is loaded from this file's own package (by file location, not by ``sys.path``), and its
  top-level name ``memtop`` is then taken out of ``sys.modules``: a ``memtop.py`` of the user's
  is what their ``import memtop`` gets (:mod:`memtop.profiler.autostart` keeps the rest working).
- this module does not stay ``sys.modules["sitecustomize"]``: the sitecustomize it chained to
  takes its place, or, if there was none, the name is left free (so a ``sitecustomize.py`` next
  to the user's script is what ``import sitecustomize`` finds, as without memtop). It leaves by
  raising ``ModuleNotFoundError`` for its own name, which ``site`` ignores silently.

Only the standard library is imported here.
"""

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(_HERE))  # .../memtop
_DONE = "_memtop_inject_done"  # sys.modules key: this file already ran in this process


def _chain_other_sitecustomize() -> object:
    """Run the sitecustomize that this one shadows on sys.path; return its module (or None)."""
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module  # while it runs, as a plain import would have it
    spec.loader.exec_module(module)
    return module


def _load_memtop_autostart() -> object:
    """memtop.profiler.autostart from this file's own package, whatever sys.path holds."""
    theirs = sys.modules.get("memtop")
    init = os.path.join(_PACKAGE_ROOT, "__init__.py")
    spec = importlib.util.spec_from_file_location("memtop", init, submodule_search_locations=[_PACKAGE_ROOT])
    if spec is None or spec.loader is None:
        raise ImportError(f"no memtop package at {_PACKAGE_ROOT}")
    package = importlib.util.module_from_spec(spec)
    sys.modules["memtop"] = package
    try:
        spec.loader.exec_module(package)
        __import__("memtop.profiler.autostart")
        autostart = sys.modules["memtop.profiler.autostart"]
    except BaseException:
        for name in [n for n in sys.modules if n == "memtop" or n.startswith("memtop.")]:
            del sys.modules[name]
        if theirs is not None:
            sys.modules["memtop"] = theirs
        raise
    autostart.adopt_package(package, theirs)
    return autostart


def _main() -> object:
    chained = None
    try:
        chained = _chain_other_sitecustomize()
    except Exception as exc:  # noqa: BLE001 - the other sitecustomize failed: report as Python would, go on
        sys.stderr.write(f"memtop: the existing sitecustomize raised {exc!r}\n")
    try:
        autostart = _load_memtop_autostart()
    except Exception as exc:  # noqa: BLE001 - never stop the user's program from starting
        sys.stderr.write(f"memtop: the profiler hook cannot load in {sys.executable} ({exc}); this process is not profiled\n")
    else:
        autostart.arm()  # type: ignore[attr-defined]
    return chained


if _DONE not in sys.modules:
    sys.modules[_DONE] = sys.modules[__name__]
    _chained = _main()
else:  # imported again by name (the user's `import sitecustomize`): memtop is armed already
    _chained = None
if _chained is not None:
    sys.modules[__name__] = _chained  # type: ignore[assignment]
else:
    raise ModuleNotFoundError(f"No module named {__name__!r}", name=__name__)
