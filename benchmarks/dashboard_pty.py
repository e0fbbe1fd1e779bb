"""Run the dashboard the way a person does, in a pseudo-terminal, for the dashboard benchmarks.

A reader thread drains the terminal (as a terminal emulator would) and remembers when text first
appeared, so a benchmark can time "the screen shows X" from the moment the process was spawned.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Terminal:
    """A process in a pty of ``cols``×``rows``; ``seen(text)`` is when ``text`` first appeared."""

    def __init__(self, argv: list[str], cols: int = 160, rows: int = 48, cwd: Path = REPO, env: dict[str, str] | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        full_env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", **(env or {})}
        full_env.pop("COLUMNS", None)
        full_env.pop("LINES", None)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=full_env, start_new_session=True)
        os.close(slave)
        self.master = master
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._buf.extend(chunk)
                if len(self._buf) > (8 << 20):
                    del self._buf[: len(self._buf) - (4 << 20)]

    def output(self) -> bytes:
        with self._lock:
            return bytes(self._buf)

    def clear(self) -> None:
        with self._lock:
            self._buf.clear()

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds since spawn until ``text`` was on the screen (raises on timeout)."""
        needle = text.encode()
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if needle in self.output():
                return time.perf_counter() - self.started
            if self.proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited with {self.proc.returncode} before showing {text!r}")
            time.sleep(0.005)
        raise TimeoutError(f"{text!r} not on the screen after {timeout:.0f}s")

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.send(b"q")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stop = True
        self._thread.join(1.0)
        os.close(self.master)
        return self.proc.returncode
