"""Launch the training command with the hook injected, in its own process group.

The child's stdout and stderr go to ``output.log`` (and, headless, to our stdout too). Ending the
child always ends its whole process group (DataLoader workers, torchrun ranks), so nothing is
left behind.

The child's fate must not depend on memtop's health: its output pipe is drained whatever happens
to the log (a full disk only stops the copy to the file, with one warning), and if memtop itself
dies the kernel sends the child SIGTERM (``PR_SET_PDEATHSIG``) while the hook's watchdog
(:mod:`memtop.profiler.watchdog`, told memtop's pid in ``MEMTOP_SUPERVISOR_PID``) ends the rest of
the process group.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import memtop
from memtop.analyzers.flags.launch import parse_launch
from memtop.errors import MemtopError
from memtop.profiler import step_journal

INJECT_DIR = Path(__file__).resolve().parent / "profiler" / "_inject"
_HOLD_LIMIT = 4 << 20  # output held back while neither the log nor a terminal can take it


def child_environment(run_dir: Path, max_steps: int | None, base: dict[str, str] | None = None, journal_dir: Path | None = None) -> dict[str, str]:
    """The child's environment: our sitecustomize first on PYTHONPATH, the run directory, limits,
    the directory of the step journals (:mod:`memtop.profiler.step_journal`), if any."""
    env = dict(os.environ if base is None else base)
    paths = [str(INJECT_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    package_root = Path(memtop.__file__).resolve().parent.parent
    if "site-packages" not in package_root.parts and "dist-packages" not in package_root.parts:
        paths.append(str(package_root))  # a source checkout: another interpreter finds memtop too, after the user's own modules
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["MEMTOP_RUN_DIR"] = str(run_dir.resolve())
    env["MEMTOP_SUPERVISOR_PID"] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    env["MEMTOP_TENSORBOARD"] = "0"  # memtop train writes the events itself, outside the training process
    if max_steps is not None:
        env["MEMTOP_MAX_STEPS"] = str(max_steps)
    else:
        env.pop("MEMTOP_MAX_STEPS", None)
    if journal_dir is not None:
        env[step_journal.ENV_DIR] = str(journal_dir)
    else:
        env.pop(step_journal.ENV_DIR, None)  # (another memtop's, inherited: its launcher recovers only its own run)
    return env


def check_command(argv: list[str]) -> None:
    """Fail early, with one line, on a command that cannot start."""
    if not argv:
        raise MemtopError("no command to run: use `memtop train script.py ARGS` or `memtop train -- CMD ARGS`")
    exe = argv[0]
    if os.sep in exe or (os.altsep and os.altsep in exe):
        if not Path(exe).exists():
            raise MemtopError(f"command not found: {exe}")
        if not os.access(exe, os.X_OK):
            raise MemtopError(f"command is not executable: {exe}")
    elif shutil.which(exe) is None:
        raise MemtopError(f"command not found: {exe}")
    script = parse_launch(argv).script
    if script is not None and script != exe and script.endswith(".py") and not Path(script).exists():
        raise MemtopError(f"script not found: {script}")


class Child:
    """The running training command (implements :class:`memtop.child.ChildController`).

    ``stdin_passthrough``: the child reads memtop's stdin (headless runs: ``echo x | memtop train
    --no-tui``); the dashboard keeps the terminal for itself and gives the child /dev/null.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        echo: IO[bytes] | None,
        *,
        stdin_passthrough: bool = False,
        warn: IO[str] | None = None,
        journal: tuple[Path, Path] | None = None,
    ) -> None:
        self.argv = argv
        self._journal = journal  # (journal directory, run directory): what the training's journals hold, written once it ends
        self.log_path = log_path
        self._echo = echo
        self._echo_lock = threading.Lock()
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._warn = warn
        self.log_error: str | None = None
        self.log_error_reported = False  # said to the user (here, or by whoever shows the run)
        self._log: IO[bytes] | None
        try:
            self._log = open(log_path, "ab")  # noqa: SIM115 - closed by the pump thread
        except OSError as exc:
            self._log = None
            self._log_failed(exc)
        try:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                stdin=None if stdin_passthrough else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()) if _PRCTL is not None else None,
            )
        except OSError as exc:
            if self._log is not None:
                self._log.close()
            raise MemtopError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
        self.started = time.time()
        self.terminated_by_memtop = False
        self._pump = threading.Thread(target=self._pump_output, name="memtop-child-output", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def set_echo(self, echo: IO[bytes] | None) -> None:
        """Copy the child's output to ``echo`` from now on (the dashboard left: show it in the terminal),
        starting with what was held back since the log could not be written."""
        with self._echo_lock:
            held, self._held = self._held, []
            self._held_bytes = 0
            self._echo = echo
            if echo is not None:
                try:
                    for chunk in held:
                        echo.write(chunk)
                    echo.flush()
                except (OSError, ValueError):
                    self._echo = None

    def _log_failed(self, exc: Exception) -> None:
        self.log_error = f"cannot write {self.log_path} ({getattr(exc, 'strerror', None) or exc})"
        where = "shown here only" if self._echo is not None else "no longer kept"
        if self._warn is not None:
            try:
                self._warn.write(f"memtop: warning: {self.log_error}; the training's output is {where}\n")
                self._warn.flush()
                self.log_error_reported = True
            except (OSError, ValueError):
                pass

    def _pump_output(self) -> None:
        """Copy the child's output to the log (and the terminal) until it closes its end of the pipe.

        Whatever fails here (full disk, a closed terminal), the pipe keeps being read: a child that
        writes into a pipe nobody reads blocks forever.
        """
        stream = self._proc.stdout
        assert stream is not None
        read = stream.read1 if hasattr(stream, "read1") else stream.read
        try:
            while True:
                try:
                    chunk = read(65536)
                except (OSError, ValueError):
                    break
                if not chunk:
                    break
                if self._log is not None:
                    try:
                        self._log.write(chunk)
                        self._log.flush()
                    except (OSError, ValueError) as exc:
                        self._close_log()
                        self._log_failed(exc)
                with self._echo_lock:
                    echo = self._echo
                    if echo is not None:
                        try:
                            echo.write(chunk)
                            echo.flush()
                        except (OSError, ValueError):
                            self._echo = None
                    elif self._log is None and self._held_bytes < _HOLD_LIMIT:
                        # nowhere to put it until the dashboard has left: keep a bounded backlog
                        self._held.append(chunk)
                        self._held_bytes += len(chunk)
        finally:
            self._close_log()

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            try:
                log.close()
            except OSError:
                pass  # the unwritten tail of a full disk: already reported by _log_failed

    def poll(self) -> int | None:
        rc = self._proc.poll()
        if rc is None:
            return None
        self.recover_records()
        return exit_code_of(rc)

    def wait(self, timeout: float | None = None) -> int:
        rc = self._proc.wait(timeout)
        self._pump.join(5.0)
        self.recover_records()
        return exit_code_of(rc)

    def recover_records(self) -> int:
        """Write into the run's record files the step lines the journals of dead training
        processes hold and the files lack (a training killed between two batches); returns how many."""
        if self._journal is None:
            return 0
        try:
            return step_journal.recover(*self._journal)
        except Exception:  # noqa: BLE001 - (recover never raises; the run's end never depends on it)
            return 0

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self, grace: float = 5.0, first: int = signal.SIGTERM) -> int:
        """End the whole process group: ``first`` (SIGTERM), then SIGKILL after ``grace`` seconds."""
        self.terminated_by_memtop = True
        if self._proc.poll() is None:
            self.signal_group(first)
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self._proc.wait()
        # the leader may be gone while workers linger: make sure the group is empty
        self.signal_group(signal.SIGKILL)
        self._pump.join(5.0)
        self.recover_records()
        return exit_code_of(self._proc.returncode)

    @property
    def signal_number(self) -> int | None:
        """The signal that ended the child, if one did."""
        rc = self._proc.returncode
        return -rc if rc is not None and rc < 0 else None

    def describe_exit(self) -> str | None:
        rc = self._proc.poll()
        if rc is None:
            return None
        return describe_returncode(rc)


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # loaded here, not in the forked child (no dlopen between fork and exec)
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends the child SIGTERM when ``parent`` (memtop) dies, even SIGKILLed.

    For any process memtop starts (the training; a flag probe should use it too).
    """

    def preexec() -> None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # memtop died between fork and prctl: nobody would send it
            os._exit(128 + int(signal.SIGTERM))

    return preexec


def exit_code_of(returncode: int) -> int:
    """subprocess's negative signal codes -> the shell's 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_returncode(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited {returncode}"


def stdout_binary() -> IO[bytes] | None:
    try:
        return sys.stdout.buffer
    except AttributeError:
        return None
