"""Open and list what a runs directory holds without trusting it.

Run directories get shared, copied and downloaded, and anything can sit in them: a directory
nobody may read, a FIFO (opening it for reading blocks until a writer comes), a device file or a
symlink to ``/dev/zero`` (reading it never ends), a symlink loop. Every reader goes through here:

* files are opened with ``O_NONBLOCK`` (a FIFO opens at once instead of blocking) and then
  checked with ``fstat`` on the open descriptor: only regular files are read, whatever a symlink
  pointed at (no race between a check and the open);
* reads are bounded by the caller's byte cap;
* every ``OSError`` (permission denied, a symlink loop, a name too long) becomes
  :class:`Unreadable`, whose message is one line for the user.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class Unreadable(OSError):
    """A path that cannot be read as a regular file or listed as a directory; ``str()`` says why."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = str(path)
        self.why = why

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


@contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """Open ``path`` for reading only if it is (or a symlink leads to) a regular file; never blocks.

    Raises :class:`Unreadable` otherwise.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Unreadable(path, _why(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Unreadable(path, f"{_kind(mode)}, not a regular file")
        # back to blocking reads: regular files ignore O_NONBLOCK, but say what we mean
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_bounded(path: Path, limit: int) -> bytes:
    """The whole regular file, or :class:`Unreadable` when it is not one or is over ``limit`` bytes."""
    try:
        with open_regular(path) as fh:
            data = fh.read(limit + 1)
    except Unreadable:
        raise
    except OSError as exc:  # EIO and friends while reading
        raise Unreadable(path, _why(exc)) from None
    if len(data) > limit:
        raise Unreadable(path, f"larger than {limit >> 20} MiB")
    return data


def list_dir(path: Path) -> list[Path]:
    """The entries of a directory (sorted by name), or :class:`Unreadable`."""
    try:
        with os.scandir(path) as it:
            names = sorted(e.name for e in it)
    except OSError as exc:
        raise Unreadable(path, _why(exc)) from None
    return [path / n for n in names]


def is_dir(path: Path) -> bool:
    """``path.is_dir()`` that says False instead of raising (loops, permissions, long names)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def exists(path: Path) -> bool:
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True
