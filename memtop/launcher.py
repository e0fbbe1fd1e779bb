"""Launch the training command with the hook injected, in its own process group.

The child's stdout and stderr go to ``output.log`` (and, headless, to our stdout too). Ending the
child always ends its whole process group (DataLoader workers, torchrun ranks), so nothing is
left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import memtop
from memtop.analyzers.flags.launch import parse_launch
from memtop.errors import MemtopError

INJECT_DIR = Path(__file__).resolve().parent / "profiler" / "_inject"


def child_environment(run_dir: Path, max_steps: int | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: our sitecustomize first on PYTHONPATH, the run directory, limits."""
    env = dict(os.environ if base is None else base)
    paths = [str(INJECT_DIR)]
    package_root = Path(memtop.__file__).resolve().parent.parent
    if "site-packages" not in package_root.parts and "dist-packages" not in package_root.parts:
        paths.append(str(package_root))  # a source checkout: let another interpreter find memtop too
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["MEMTOP_RUN_DIR"] = str(run_dir.resolve())
    env["PYTHONUNBUFFERED"] = "1"
    env["MEMTOP_TENSORBOARD"] = "0"  # memtop train writes the events itself, outside the training process
    if max_steps is not None:
        env["MEMTOP_MAX_STEPS"] = str(max_steps)
    else:
        env.pop("MEMTOP_MAX_STEPS", None)
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
    """The running training command (implements :class:`memtop.child.ChildController`)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, echo: IO[bytes] | None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._echo = echo
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed by the pump thread
        try:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            raise MemtopError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
        self.started = time.time()
        self.terminated_by_memtop = False
        self._pump = threading.Thread(target=self._pump_output, name="memtop-child-output", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _pump_output(self) -> None:
        stream = self._proc.stdout
        assert stream is not None
        try:
            while True:
                chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(4096)
                if not chunk:
                    break
                self._log.write(chunk)
                self._log.flush()
                if self._echo is not None:
                    try:
                        self._echo.write(chunk)
                        self._echo.flush()
                    except (OSError, ValueError):
                        self._echo = None
        finally:
            self._log.close()

    def poll(self) -> int | None:
        rc = self._proc.poll()
        return None if rc is None else exit_code_of(rc)

    def wait(self, timeout: float | None = None) -> int:
        rc = self._proc.wait(timeout)
        self._pump.join(5.0)
        return exit_code_of(rc)

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
