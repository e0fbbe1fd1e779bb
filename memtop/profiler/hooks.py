"""Wiring the session into torch: optimizer step hooks, backward start, OOM, exceptions, exit.

Every callback is guarded: an error inside memtop is reported once as a ``warning`` record, all
hooks are removed, and training goes on untouched. Deliberate exits (``--max-steps``) pass through.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from memtop.profiler.config import HookConfig
from memtop.profiler.session import Session

_thread_time = time.thread_time
_perf_counter = time.perf_counter
_lock = threading.RLock()
_session: Session | None = None
_installed = False
_handles: list[Any] = []
_orig_excepthook: Callable[..., Any] | None = None
_config: HookConfig | None = None
_session_factory: Callable[[], Session] | None = None

_OOM_BYTES_RE = re.compile(r"(?:Tried to allocate|tried to allocate)\s+([0-9.]+)\s*(bytes|B|KiB|MiB|GiB|TiB)?", re.IGNORECASE)
_UNITS = {None: 1, "b": 1, "bytes": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def current_session() -> Session | None:
    return _session


def get_session(create: bool = True) -> Session | None:
    """The process's session, created on first use (so processes that never train write nothing)."""
    global _session
    if _session is None and create and _session_factory is not None:
        with _lock:
            if _session is None:
                _session = _session_factory()
    return _session


def is_zero_code() -> bool:
    """True when `memtop train` armed the hook in this process (its session comes from the run dir)."""
    return _installed and _config is not None and _config.run_dir is not None


def set_session(session: Session | None) -> None:
    global _session
    _session = session


def _disable(session: Session | None, exc: BaseException) -> None:
    """Report a hook error once and take every hook out."""
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    message = f"memtop hook error{loc}: {detail}; the hook is off for the rest of this run, training goes on"
    if session is not None and not session.disabled:
        session.disabled = True
        try:
            session.warn(message, disabled=True)
        except Exception:  # noqa: BLE001 - even the warning failed: say it on stderr
            sys.stderr.write(f"memtop: {message}\n")
    else:
        sys.stderr.write(f"memtop: {message}\n")
    uninstall()


def guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a hook callback: errors turn the hook off; its CPU time is charged to the session."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        session = _session
        if session is not None and session.disabled:
            return
        t0 = time.thread_time()
        try:
            fn(*args, **kwargs)
        except SystemExit:
            raise
        except Exception as exc:  # noqa: BLE001 - the hook must never break training
            _disable(_session, exc)
        finally:
            session = _session
            if session is not None:
                session.hook_cpu_seconds += time.thread_time() - t0

    return wrapper


# The two per-step callbacks charge their time to ``hook_cpu_seconds``. A callback that starts
# with a steady step planned (a CPU run between measured steps: tens of microseconds of work) is
# timed by ``perf_counter``, a vDSO clock read; ``thread_time`` is a system call, ~7 µs each
# right after a training step on the 2-core VM (docs/performance.md). Wall time over so short a
# callback is its CPU time unless the thread is descheduled inside it: then it is more, never
# less. Every other callback (measuring, counting: milliseconds of Python) is timed in CPU time.


def _on_optimizer_post(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """:func:`guarded` written out: called at every optimizer step, one call level less."""
    session = _session
    if session is None:
        _on_optimizer_post_first(opt)  # (the session is made here)
        return
    if session.disabled:
        return
    clock = _perf_counter if session.steady is not None else _thread_time  # (which clock: the note above _on_optimizer_post)
    t0 = clock()
    try:
        session.on_optimizer_step(opt)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the hook must never break training
        _disable(session, exc)
    finally:
        session.hook_cpu_seconds += clock() - t0


@guarded
def _on_optimizer_post_first(opt: torch.optim.Optimizer) -> None:
    session = _session or get_session()
    if session is not None:
        session.on_optimizer_step(opt)


@guarded
def _on_backward(t_outputs: Any) -> None:
    session = _session or get_session(create=is_zero_code())
    if session is not None:
        session.on_backward(t_outputs)


@guarded
def _on_backward_end() -> None:
    session = _session
    if session is not None:
        session.on_backward_end()


_engine_original: Callable[..., Any] | None = None  # never cleared: a stale wrapper still works
_backward_running = [0]  # outermost engine calls now running (any thread)


def _engine_run_backward_wrapper(t_outputs: Any, *args: Any, **kwargs: Any) -> Any:
    """Only an outermost engine call ends a forward pass: a call made while a backward runs
    (reentrant checkpointing recomputes a segment and backprops through it, on CUDA from the
    engine's device thread) is not one."""
    original = _engine_original
    assert original is not None
    if _backward_running[0]:
        return original(t_outputs, *args, **kwargs)
    session = _session
    if session is None:
        _on_backward(t_outputs)  # (a zero-code session is made here)
    elif not session.disabled:  # _on_backward written out: one call level less, every step
        clock = _perf_counter if session.steady is not None else _thread_time  # (which clock: the note above _on_optimizer_post)
        t0 = clock()
        try:
            session.on_backward(t_outputs)
        except SystemExit:
            raise
        except Exception as exc:  # noqa: BLE001 - the hook must never break training
            _disable(session, exc)
        finally:
            session.hook_cpu_seconds += clock() - t0
    _backward_running[0] += 1
    try:
        result = original(t_outputs, *args, **kwargs)
    finally:
        _backward_running[0] -= 1
    session = _session
    if session is not None and not session.optimizer_steps_seen and not session.disabled:
        _on_backward_end()  # only needed until an optimizer step is seen (steps from backward passes)
    return result


def _parse_requested(message: str) -> int | None:
    m = _OOM_BYTES_RE.search(message)
    if not m:
        m2 = re.search(r"allocate (\d+) bytes", message)
        return int(m2.group(1)) if m2 else None
    unit = (m.group(2) or "b").lower()
    try:
        return int(float(m.group(1)) * _UNITS.get(unit, 1))
    except ValueError:
        return None


def is_oom(exc: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


@guarded
def _on_cuda_oom(device: int, alloc: int, device_allocated: int, device_free: int) -> None:
    session = get_session()
    if session is not None:
        message = f"CUDA out of memory on device {device}: tried to allocate {alloc} bytes ({device_free} bytes free on the device)"
        session.on_oom(message, int(alloc), int(device_free))


def _attach_cuda_oom_observer() -> None:
    attach = getattr(torch._C, "_cuda_attach_out_of_memory_observer", None)
    if attach is not None:
        attach(_on_cuda_oom)


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    try:
        session = get_session(create=is_oom(exc))
        if session is not None and not session.disabled:
            session.exception_name = exc_type.__name__
            if session.exit_reason not in ("oom", "max_steps"):
                session.exit_reason = "exception"
            if is_oom(exc):
                session.on_oom(str(exc), _parse_requested(str(exc)), None)
    except Exception as hook_exc:  # noqa: BLE001 - report, then let Python print the user's error
        _disable(_session, hook_exc)
    finally:
        (_orig_excepthook or sys.__excepthook__)(exc_type, exc, tb)


def _at_exit() -> None:
    session = _session
    if session is not None:
        try:
            session.close()
        except Exception as exc:  # noqa: BLE001 - never fail the interpreter's shutdown
            sys.stderr.write(f"memtop: could not finish the run record: {exc}\n")


def _on_sigterm(signum: int, frame: Any) -> None:
    """Write the exit record, then die of SIGTERM as the script would have without memtop."""
    session = _session
    if session is not None:
        session.exit_reason = "signal"
        _at_exit()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install(config: HookConfig, factory: Callable[[], Session]) -> None:
    """Install the global hooks once per process."""
    global _installed, _orig_excepthook, _config, _session_factory, _engine_original
    with _lock:
        _config = config
        _session_factory = factory
        if _installed:
            return
        _installed = True
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _handles.append(register_optimizer_step_post_hook(_on_optimizer_post))
        autograd = torch.autograd
        orig = getattr(autograd, "_engine_run_backward", None)
        if orig is not None and getattr(orig, "__name__", "") != _engine_run_backward_wrapper.__name__:
            _engine_original = orig
            autograd._engine_run_backward = _engine_run_backward_wrapper  # type: ignore[attr-defined]
        if sys.excepthook is not _excepthook:
            _orig_excepthook = sys.excepthook
            sys.excepthook = _excepthook
        atexit.unregister(_at_exit)
        atexit.register(_at_exit)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        lazy_call = getattr(torch.cuda, "_lazy_call", None)
        if torch.cuda.is_available() and lazy_call is not None:
            lazy_call(_attach_cuda_oom_observer)


def uninstall() -> None:
    """Remove the hooks that can be removed (used after a hook error and by tests)."""
    global _installed, _session_factory, _config
    with _lock:
        _session_factory = None
        _config = None
        for h in _handles:
            try:
                h.remove()
            except Exception:  # noqa: BLE001 - already removed
                continue
        _handles.clear()
        if _engine_original is not None and torch.autograd._engine_run_backward is _engine_run_backward_wrapper:  # type: ignore[attr-defined]
            torch.autograd._engine_run_backward = _engine_original  # type: ignore[attr-defined]
        _installed = False
