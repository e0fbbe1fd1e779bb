"""`memtop train`: run a training command under the profiler, with the dashboard or headless."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memtop.analyzers.flags import FlagDetection
    from memtop.launcher import Child
    from memtop.supervise import RunEnder

from memtop.commands import add_common_options
from memtop.commands.child_command import add_child_argument, positive_int
from memtop.stderr import say as _say

NAME = "train"
HELP = "launch a training command under the profiler"

def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "memtop train [OPTIONS] (-- CMD ARGS... | script.py ARGS...)"
    add_common_options(parser)
    parser.add_argument("--no-tui", action="store_true", help="headless: a status line every --interval seconds (default when stdout is not a terminal)")
    parser.add_argument("--name", default=None, help="run name (default: the script's name)")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="end the run cleanly after N optimizer steps")
    parser.add_argument("--interval", type=_positive_float, default=5.0, help="seconds between headless status lines (default 5)")
    parser.add_argument("--refresh", type=_positive_float, default=0.5, help="dashboard refresh in seconds (default 0.5)")
    from memtop.commands._device_memory import size_arg

    parser.add_argument("--device-memory", type=size_arg, default=None, metavar="SIZE", help="cap the process's CUDA memory (e.g. 24GB) to act as a smaller card")
    add_child_argument(parser)


def _run_name(child: list[str], explicit: str | None) -> str:
    if explicit:
        return explicit
    from memtop.analyzers.flags.launch import parse_launch

    return parse_launch(child).name


def detect_devices() -> list[dict[str, Any]]:
    """NVIDIA devices through NVML (no torch import, no CUDA context); the CPU where there are none."""
    devices: list[dict[str, Any]] = []
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                devices.append(
                    {
                        "index": i,
                        "name": name.decode() if isinstance(name, bytes) else str(name),
                        "total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                        "kind": "cuda",
                    }
                )
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver / no NVML: this machine has no NVIDIA GPU to list
        devices = []
    if devices:
        return devices
    return [{"index": None, "name": _cpu_name(), "total_bytes": _physical_memory(), "kind": "cpu"}]


def _cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo on Linux: psutil has no model name (platform.processor() is
    often empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "CPU"


def _physical_memory() -> int | None:
    import psutil

    try:
        return int(psutil.virtual_memory().total)
    except (OSError, RuntimeError):
        return None


def run(args: argparse.Namespace) -> int:
    from memtop.launcher import Child, check_command, child_environment, stdout_binary
    from memtop.profiler import step_journal
    from memtop.runs import rundir
    from memtop.supervise import RunEnder, SignalWatch

    child_argv: list[str] = list(getattr(args, "child", []) or [])
    check_command(child_argv)
    devices = detect_devices()
    if args.device_memory is not None:
        from memtop.commands._device_memory import check_cap

        check_cap(args.device_memory, devices)
    runs_dir = Path(args.runs_dir) if args.runs_dir else rundir.default_runs_dir()
    run_dir = rundir.create_run_dir(runs_dir, _run_name(child_argv, args.name))
    meta = rundir.new_meta(run_dir, child_argv, devices)
    meta["max_steps"] = args.max_steps
    meta["launcher"] = "memtop train"
    if args.device_memory is not None:
        meta["device_memory"] = args.device_memory
    meta_lock = threading.Lock()
    _write_first_meta(run_dir, meta, runs_dir)

    use_tui = not args.no_tui and sys.stdout.isatty() and sys.stdin.isatty()
    journal_dir = step_journal.make_dir()  # repeated step lines in shared memory, written in batches
    env = child_environment(run_dir, args.max_steps, journal_dir=journal_dir)
    if args.device_memory is not None:
        from memtop.profiler.device_cap import ENV_DEVICE_MEMORY

        env[ENV_DEVICE_MEMORY] = str(args.device_memory)
    state = _RunState(run_dir, meta_lock)
    ender = RunEnder(lambda: _finalize(run_dir, state, interrupted=True))
    signals = SignalWatch(ender.on_signal).start()
    child: Child | None = None
    flag_detection: FlagDetection | None = None
    try:
        child = Child(
            child_argv,
            env,
            run_dir / "output.log",
            echo=None if use_tui else stdout_binary(),
            stdin_passthrough=not use_tui,
            warn=None if use_tui else sys.stderr,  # under the dashboard: said once the screen is closed
            journal=None if journal_dir is None else (journal_dir, run_dir),
        )
        state.child = ender.child = child
        if ender.signum is not None:  # a signal came while the child was starting
            child.terminate()
        _update_meta(state, child_pid=child.pid)
        flag_detection = _detect_flags_in_background(state, child_argv)
        exit_code, interrupted = _supervise(run_dir, child, ender, use_tui, args)
        status = _finalize(run_dir, state, interrupted=interrupted)
    except BaseException:
        if child is not None:
            child.terminate()
            _finalize(run_dir, state, interrupted=True)
        else:  # the command could not start: the run directory says so
            _update_meta(state, ended_at=time.time(), status="failed")
        raise
    finally:
        if flag_detection is not None:
            flag_detection.stop()  # a --help probe still running dies with its process group
        if journal_dir is not None:
            step_journal.remove_dir(journal_dir, run_dir)  # (what is left: the child is gone)
        signals.stop()
        ender.main_done.set()
    if status != "interrupted":  # a long run's first `memtop analyze` then skips the scan
        from memtop.analyzers.load import index_long_run

        index_long_run(run_dir)
    if child.log_error and not child.log_error_reported:
        _say(f"warning: {child.log_error}; the rest of the training's output was not kept")
    if status in ("failed", "oom") and not _has_steps(run_dir):
        _say(f"the command {status_phrase(status)} (exit code {exit_code}) before any step was recorded; its output is in {run_dir / 'output.log'}")
    else:
        _say(f"run {run_dir.name} {status_phrase(status)} (exit code {exit_code}); `memtop analyze {run_dir}` explains it")
    return exit_code


def _supervise(run_dir: Path, child: Child, ender: RunEnder, use_tui: bool, args: argparse.Namespace) -> tuple[int, bool]:
    """Show the run until the child ends: the dashboard, or status lines if it cannot start or fails."""
    from memtop.launcher import stdout_binary

    tensorboard = _start_tensorboard(run_dir)
    try:
        if use_tui:
            try:
                from memtop.tui.app import DashboardFailed, run_dashboard
            except ImportError as exc:
                _say(f"the dashboard cannot start ({exc}); running headless")
                use_tui = False
        if use_tui:
            try:
                code = run_dashboard(run_dir, child=child, refresh=args.refresh, end_requested=lambda: ender.reason)
            except DashboardFailed as failed:
                # The training must not pay for a dashboard bug (or a full disk): say so once, go on headless.
                if failed.log_failure:
                    child.log_error_reported = True
                    _say(f"warning: {failed}; the run goes on with status lines and the training's output is shown here")
                else:
                    where = _save_text(run_dir / "dashboard-error.log", failed.details)
                    _say(f"the dashboard failed ({failed}); the run goes on with status lines{where}")
                child.set_echo(stdout_binary())
            else:
                code = code if code is not None else child.terminate()
                return code, child.terminated_by_memtop or ender.signum is not None
        code, _ = _run_headless(run_dir, child, args.interval)
        return code, child.terminated_by_memtop or ender.signum is not None
    finally:
        if tensorboard is not None:
            tensorboard.stop()


def _save_text(path: Path, text: str) -> str:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        return ""
    return f" (details in {path})"


class _RunState:
    """What the main thread and the signal thread share: the child, and meta.json finalized once."""

    def __init__(self, run_dir: Path, lock: threading.Lock) -> None:
        self.run_dir = run_dir
        self.lock = lock
        self.child: Child | None = None
        self.final_status: str | None = None
        self.meta_warned = False


def _write_first_meta(run_dir: Path, meta: dict[str, Any], runs_dir: Path) -> None:
    """Write meta.json before anything starts; a runs dir that cannot take it ends memtop with one line.

    A careful user asked for a profiled run: starting the training unprofiled on a full disk would
    waste it silently, so memtop refuses (exit 2) and leaves nothing behind (no half run directory,
    no temp file).
    """
    from memtop.errors import MemtopError
    from memtop.runs import rundir

    try:
        rundir.write_meta(run_dir, meta)
    except OSError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise MemtopError(f"cannot write to the runs directory {runs_dir}: {exc.strerror or exc} (free some space or pass --runs-dir)") from exc


def _update_meta(state: _RunState, **changes: Any) -> bool:
    """Update meta.json; a full disk costs the update (one warning), never the run, never a stray temp file."""
    from memtop.runs import rundir

    with state.lock:
        try:
            rundir.update_meta(state.run_dir, **changes)
            return True
        except OSError as exc:
            try:
                (state.run_dir / f".meta.json.{os.getpid()}.tmp").unlink(missing_ok=True)
            except OSError:
                pass
            if not state.meta_warned:
                state.meta_warned = True
                _say(f"warning: cannot update {state.run_dir / 'meta.json'} ({exc.strerror or exc})")
            return False


def status_phrase(status: str) -> str:
    return {
        "finished": "finished",
        "failed": "failed",
        "oom": "ran out of memory",
        "killed": "was killed",
        "interrupted": "was interrupted",
    }.get(status, status)


def _detect_flags_in_background(state: _RunState, child_argv: list[str]) -> FlagDetection:
    """Flags from the script's source (a bounded --help probe only as a last resort), into meta.json.

    A probe is memtop's child: every exit path of memtop train ends it (``FlagDetection.stop`` in
    the main thread; on a signal, ``RunEnder`` also kills every process memtop started but the
    training, in case the main thread is stuck).
    """
    from memtop.analyzers.flags import FlagDetection

    def store(flags: list[dict[str, object]]) -> None:
        _update_meta(state, detected_flags=flags)

    return FlagDetection(child_argv, Path.cwd(), store).start()


def _start_tensorboard(run_dir: Path) -> Any:
    try:
        from memtop.runs.tensorboard import RunFollower

        return RunFollower(run_dir).start()
    except ImportError as exc:
        sys.stderr.write(f"memtop: no TensorBoard events for this run ({exc})\n")
        return None


def _records_contain(run_dir: Path, needle: bytes) -> bool:
    """Whether any rank file holds ``needle`` (e.g. a record type), read once at the end of a run."""
    from memtop.runs.reader import rank_files
    from memtop.runs.safeio import open_regular

    for path in rank_files(run_dir).values():
        try:
            with open_regular(path) as fh:  # regular files only: never blocks on a FIFO
                tail = b""
                # in 1 MiB pieces: a long run's file (hundreds of MB) is never held whole
                while chunk := fh.read(1 << 20):
                    if needle in tail + chunk[: len(needle)] or needle in chunk:
                        return True
                    tail = chunk[-(len(needle) - 1) :]
        except OSError:
            continue
    return False


def _has_steps(run_dir: Path) -> bool:
    return _records_contain(run_dir, b'"type":"step"')


def _had_oom(run_dir: Path) -> bool:
    return _records_contain(run_dir, b'"type":"oom"')


def _finalize(run_dir: Path, state: _RunState, interrupted: bool) -> str:
    """Write how the run ended into meta.json, once (the main thread or the signal thread, whichever is first)."""
    with state.lock:
        if state.final_status is not None:
            return state.final_status
        child = state.child
        rc = child.poll() if child is not None else None
        sig = child.signal_number if child is not None else None
        if interrupted:
            status = "interrupted"
        elif _had_oom(run_dir):
            status = "oom"
        elif sig is not None:
            status = "killed"
        elif rc == 0:
            status = "finished"
        else:
            status = "failed"
        state.final_status = status
    _update_meta(state, ended_at=time.time(), exit_code=rc, status=status, signal=sig)
    return status


def _run_headless(run_dir: Path, child: Any, interval: float) -> tuple[int, bool]:
    """Print a status line every ``interval`` s until the child ends.

    Signals are not handled here: :class:`memtop.supervise.RunEnder` ends the child's group on
    Ctrl-C, SIGTERM and SIGHUP, and this loop sees the child end.
    """
    from memtop.headless import StatusLine

    status = StatusLine(run_dir)
    next_line = time.monotonic() + interval
    while child.poll() is None:
        time.sleep(0.1)
        if time.monotonic() >= next_line:
            next_line += interval
            _print_status(status.line())
    code = child.wait()
    _print_status(status.line(final=True))
    return code, child.terminated_by_memtop


def _print_status(line: str) -> None:
    if not line:
        return
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        pass  # stdout is gone (a closed terminal, a full disk under a redirect): the run goes on
