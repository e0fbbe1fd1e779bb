"""The explicit API: ``with memtop.profile(model, optimizer) as prof: ... prof.step()`` and
``with memtop.stage("name"): ...``. Both work alongside the zero-code hook of `memtop train`."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import torch

from memtop.profiler import hooks, naming
from memtop.profiler.config import HookConfig
from memtop.profiler.session import Session
from memtop.runs import rundir


def _script_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return Path(argv0).stem or "run"


def standalone_session(config: HookConfig, runs_dir: Path | None = None, name: str | None = None) -> Session:
    """A session that owns its run directory (no `memtop train` around it): creates meta.json."""
    run_dir = rundir.create_run_dir(runs_dir or rundir.default_runs_dir(), name or _script_name())
    meta = rundir.new_meta(run_dir, [sys.executable, *sys.argv], devices=[])
    meta["launcher"] = "api"
    rundir.write_meta(run_dir, meta)
    session = Session(config, run_dir)
    _register_meta_finalizer(run_dir, session)
    return session


def _register_meta_finalizer(run_dir: Path, session: Session) -> None:
    import atexit

    def finalize() -> None:
        try:
            status = {"normal": "finished", "max_steps": "finished", "oom": "oom", "signal": "killed"}.get(session.exit_reason, "failed")
            rundir.update_meta(run_dir, ended_at=time.time(), status=status, exit_code=0 if status == "finished" else None)
        except OSError:
            pass

    atexit.register(finalize)


class Profile:
    """Context manager returned by :func:`profile`."""

    def __init__(self, session: Session, owns: bool) -> None:
        self.session = session
        self._owns = owns

    @property
    def run_dir(self) -> Path:
        return self.session.run_dir

    def step(self) -> None:
        """Mark a step where no optimizer step marks it (with a torch optimizer, steps come from it)."""
        hooks.guarded(self.session.on_manual_step)()

    def __enter__(self) -> Profile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and not isinstance(exc, SystemExit):
            self.session.exception_name = type(exc).__name__
            if hooks.is_oom(exc):
                hooks.guarded(self.session.on_oom)(str(exc), hooks._parse_requested(str(exc)), None)
            elif self.session.exit_reason == "normal":
                self.session.exit_reason = "exception"
        if self._owns:
            self.session.close()
            hooks.uninstall()
            hooks.set_session(None)


def profile(
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Profile:
    """Profile a training loop explicitly.

    Under `memtop train` this joins the hook already running (the model and optimizer only give
    tensors their names); otherwise it starts a run of its own in ``runs_dir``.
    """
    config = HookConfig.from_env()
    existing = hooks.get_session(create=hooks.is_zero_code())
    owns = existing is None
    if existing is None:
        session = standalone_session(config, Path(runs_dir) if runs_dir else None, name)
        hooks.set_session(session)
        hooks.install(config, lambda: session)
    else:
        session = existing
    if model is not None:
        session.watch_model(model, naming.variable_name_for(model, "model"))
    if optimizer is not None:
        session.watch_optimizer(optimizer, naming.variable_name_for(optimizer, "optimizer"))
    return Profile(session, owns)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Mark a pipeline stage; records memory before/after and the peak within it."""
    session = hooks.get_session(create=True)
    ctx = None
    if session is not None and not session.disabled:
        try:
            ctx = session.stage_begin()
        except Exception as exc:  # noqa: BLE001 - a hook error never breaks the user's stage
            hooks._disable(session, exc)
            ctx = None
    try:
        yield
    finally:
        if ctx is not None and session is not None and not session.disabled:
            hooks.guarded(session.stage_end)(name, ctx)
