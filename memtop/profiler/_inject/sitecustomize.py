"""memtop's zero-code hook: put on PYTHONPATH by `memtop train`.

It runs the sitecustomize this one shadows (if any), then arms the profiler, which waits for
``import torch``. It must never stop the user's program from starting.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _chain_other_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def _arm() -> None:
    try:
        from memtop.profiler.autostart import arm
    except ImportError as exc:
        sys.stderr.write(f"memtop: the profiler hook cannot load in {sys.executable} ({exc}); this process is not profiled\n")
        return
    arm()


try:
    _chain_other_sitecustomize()
except Exception as _exc:  # noqa: BLE001 - the other sitecustomize failed: report as Python would, go on
    sys.stderr.write(f"memtop: the existing sitecustomize raised {_exc!r}\n")
_arm()
