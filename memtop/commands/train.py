"""`memtop train`: run a training command under the profiler, with the dashboard or headless."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memtop.analyzers.flags import FlagDetection
    from memtop.launcher import Child

from memtop.commands import add_common_options

NAME = "train"
HELP = "launch a training command under the profiler"

# Options of `memtop train` that take a value (needed to find where the child's command starts).
_VALUE_OPTIONS = {"--runs-dir", "--name", "--max-steps", "--interval", "--refresh"}


def split_child_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[own options] -- CMD ...`` or ``[own options] script.py ARGS`` -> (own, child)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], _normalize_child(argv[i + 1 :])
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            if name in _VALUE_OPTIONS and "=" not in arg:
                i += 2
            else:
                i += 1
            continue
        return argv[:i], _normalize_child(argv[i:])
    return argv, []


def _normalize_child(child: list[str]) -> list[str]:
    if child and child[0].endswith(".py"):
        return [sys.executable, *child]
    return child


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    parser.add_argument("--max-steps", type=_positive_int, default=None, help="end the run cleanly after N optimizer steps")
    parser.add_argument("--interval", type=_positive_float, default=5.0, help="seconds between headless status lines (default 5)")
    parser.add_argument("--refresh", type=_positive_float, default=0.5, help="dashboard refresh in seconds (default 0.5)")


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
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def run(args: argparse.Namespace) -> int:
    from memtop.launcher import Child, check_command, child_environment, stdout_binary
    from memtop.runs import rundir

    child_argv: list[str] = list(getattr(args, "child", []) or [])
    check_command(child_argv)
    runs_dir = Path(args.runs_dir) if args.runs_dir else rundir.default_runs_dir()
    run_dir = rundir.create_run_dir(runs_dir, _run_name(child_argv, args.name))
    meta = rundir.new_meta(run_dir, child_argv, detect_devices())
    meta["max_steps"] = args.max_steps
    meta["launcher"] = "memtop train"
    meta_lock = threading.Lock()
    with meta_lock:
        rundir.write_meta(run_dir, meta)

    use_tui = not args.no_tui and sys.stdout.isatty() and sys.stdin.isatty()
    env = child_environment(run_dir, args.max_steps)
    child = Child(child_argv, env, run_dir / "output.log", echo=None if use_tui else stdout_binary())
    flag_detection = _detect_flags_in_background(run_dir, child_argv, meta_lock)
    tensorboard = _start_tensorboard(run_dir)

    exit_code: int
    interrupted = False
    try:
        if use_tui:
            try:
                from memtop.tui.app import run_dashboard
            except ImportError as exc:
                sys.stderr.write(f"memtop: the dashboard cannot start ({exc}); running headless\n")
                use_tui = False
        if use_tui:
            code = run_dashboard(run_dir, child=child, refresh=args.refresh)
            exit_code = code if code is not None else child.terminate()
            interrupted = child.terminated_by_memtop
        else:
            exit_code, interrupted = _run_headless(run_dir, child, args.interval)
    except BaseException:
        child.terminate()
        _finalize(run_dir, child, meta_lock, interrupted=True)
        raise
    finally:
        flag_detection.stop()  # a --help probe still running dies with its process group
        if tensorboard is not None:
            tensorboard.stop()
    status = _finalize(run_dir, child, meta_lock, interrupted=interrupted)
    if status in ("failed", "oom") and not _has_steps(run_dir):
        sys.stderr.write(f"memtop: the command {status_phrase(status)} (exit code {exit_code}) before any step was recorded; its output is in {run_dir / 'output.log'}\n")
    else:
        sys.stderr.write(f"memtop: run {run_dir.name} {status_phrase(status)} (exit code {exit_code}); `memtop analyze {run_dir}` explains it\n")
    return exit_code


def status_phrase(status: str) -> str:
    return {
        "finished": "finished",
        "failed": "failed",
        "oom": "ran out of memory",
        "killed": "was killed",
        "interrupted": "was interrupted",
    }.get(status, status)


def _detect_flags_in_background(run_dir: Path, child_argv: list[str], lock: threading.Lock) -> FlagDetection:
    """Flags from the script's source (a bounded --help probe only as a last resort), into meta.json."""
    from memtop.analyzers.flags import FlagDetection
    from memtop.runs import rundir

    def store(flags: list[dict[str, object]]) -> None:
        with lock:
            rundir.update_meta(run_dir, detected_flags=flags)

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

    for path in rank_files(run_dir).values():
        try:
            with open(path, "rb") as fh:
                if needle in fh.read():
                    return True
        except OSError:
            continue
    return False


def _has_steps(run_dir: Path) -> bool:
    return _records_contain(run_dir, b'"type":"step"')


def _had_oom(run_dir: Path) -> bool:
    return _records_contain(run_dir, b'"type":"oom"')


def _finalize(run_dir: Path, child: Child, lock: threading.Lock, interrupted: bool) -> str:
    from memtop.runs import rundir

    rc = child.poll()
    sig = child.signal_number
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
    with lock:
        rundir.update_meta(run_dir, ended_at=time.time(), exit_code=rc, status=status, signal=sig)
    return status


def _run_headless(run_dir: Path, child: Any, interval: float) -> tuple[int, bool]:
    """Print a status line every ``interval`` s until the child ends; forward Ctrl-C/SIGTERM/SIGHUP."""
    from memtop.headless import StatusLine

    status = StatusLine(run_dir)
    stop = {"signal": None}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["signal"] = signum  # type: ignore[assignment]

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except (ValueError, OSError):
            continue
    try:
        next_line = time.monotonic() + interval
        while child.poll() is None:
            if stop["signal"] is not None:
                sys.stderr.write(f"memtop: {signal.Signals(stop['signal']).name} received, ending the training process group\n")
                first = signal.SIGINT if stop["signal"] == signal.SIGINT else signal.SIGTERM
                return child.terminate(first=first), True
            time.sleep(0.1)
            if time.monotonic() >= next_line:
                next_line += interval
                line = status.line()
                if line:
                    print(line, flush=True)
        code = child.wait()
        line = status.line(final=True)
        if line:
            print(line, flush=True)
        return code, False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

