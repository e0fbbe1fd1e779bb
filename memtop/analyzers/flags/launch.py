"""The one parser of a launch command: where the training script is, and which arguments are its own.

``python [opts] train.py ARGS``, ``python -m pkg.train ARGS``, ``torchrun [opts] train.py ARGS``,
``python -m torch.distributed.run [opts] train.py ARGS``, ``accelerate launch [opts] train.py ARGS``,
``deepspeed [opts] train.py ARGS`` and ``./train.py ARGS``. :func:`parse_launch` reads the argv
alone (no file is touched: ``analyze`` uses it on run directories from elsewhere);
:func:`find_target` also resolves the script on disk for flag detection at launch.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# Interpreter options that take a value as the next argument (`python -W ignore x.py`).
_PY_OPTS_WITH_VALUE = {"-W", "-X", "--check-hash-based-pycs"}
# torchrun / torch.distributed.run options that take no value; every other option takes one.
_LAUNCHER_SWITCHES = {
    "--standalone", "--no-python", "--no_python", "--run-path", "--run_path", "-m", "--module", "--use_env", "--use-env",
    # accelerate launch
    "--multi_gpu", "--cpu", "--use_deepspeed", "--use_fsdp", "--use_megatron_lm", "--debug", "-q", "--quiet", "--tpu", "--mps",
}
_TORCHRUN_MODULES = {"torch.distributed.run", "torch.distributed.launch"}
_LAUNCHERS = {"torchrun", "deepspeed"}


@dataclass(frozen=True)
class Launch:
    """A launch command split in two: ``head`` (launcher, its options, the script) and ``args``.

    ``script`` is the script as written in the command (None for ``-m`` and ``-c``); ``module`` the
    module of ``-m``; ``python`` the interpreter named in the command, if any.
    """

    head: tuple[str, ...]
    args: tuple[str, ...]
    script: str | None
    module: str | None
    python: str | None

    @property
    def name(self) -> str:
        """A short name for the run: the script's stem, the module's last part, or the program."""
        if self.script:
            return Path(self.script).stem or "run"
        if self.module:
            return self.module.rsplit(".", 1)[-1]
        return Path(self.head[0]).name if self.head else "run"


def is_python(exe: str) -> bool:
    return bool(re.fullmatch(r"python(\d+(\.\d+)?)?(\.exe)?|pypy\d*", Path(exe).name))


def _after_python_options(argv: list[str], i: int) -> tuple[str | None, str | None, int]:
    """Skip interpreter options from index ``i``; return (script, module, index after it)."""
    while i < len(argv):
        a = argv[i]
        if a == "-m":
            return (None, argv[i + 1], i + 2) if i + 1 < len(argv) else (None, None, len(argv))
        if a.startswith("-m") and len(a) > 2:
            return None, a[2:], i + 1
        if a in ("-c", "-"):
            return None, None, len(argv)
        if a in _PY_OPTS_WITH_VALUE:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a, None, i + 1
    return None, None, len(argv)


def _after_launcher_options(argv: list[str], i: int) -> tuple[str | None, str | None, int]:
    """Skip torchrun's (or accelerate's, deepspeed's) own options; return (script, module, index after it)."""
    as_module = False
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-"):
            break
        opt = a.split("=", 1)[0]
        if opt in ("-m", "--module"):
            as_module = True
        next_is_script = i + 1 < len(argv) and argv[i + 1].endswith(".py")  # `--multi_gpu train.py`
        i += 1 if "=" in a or opt in _LAUNCHER_SWITCHES or next_is_script else 2
    if i >= len(argv):
        return None, None, len(argv)
    return (None, argv[i], i + 1) if as_module else (argv[i], None, i + 1)


def parse_launch(command: list[str] | tuple[str, ...]) -> Launch:
    """Split a launch command without touching the filesystem. Never raises."""
    argv = [str(a) for a in command]
    if not argv:
        return Launch((), (), None, None, None)
    exe = argv[0]
    name = Path(exe).name
    python: str | None = None
    if is_python(exe):
        python = exe
        script, module, rest = _after_python_options(argv, 1)
        if module in _TORCHRUN_MODULES:
            script, module, rest = _after_launcher_options(argv, rest)
    elif name in _LAUNCHERS:
        script, module, rest = _after_launcher_options(argv, 1)
    elif name == "accelerate" and len(argv) > 1 and argv[1] == "launch":
        script, module, rest = _after_launcher_options(argv, 2)
    else:
        script, module, rest = exe, None, 1  # an executable script (or any program): its args follow
    return Launch(tuple(argv[:rest]), tuple(argv[rest:]), script, module, python)


def split_command(command: list[str]) -> tuple[list[str], list[str]]:
    """``(launcher + script, the script's own args)``."""
    launch = parse_launch(command)
    return list(launch.head), list(launch.args)


@dataclass(frozen=True)
class Target:
    """The script (or module) of a launch command, resolved on disk, and the script's args."""

    python: str
    script: Path | None
    module: str | None
    args: list[str]
    module_path: Path | None = None

    @property
    def source_path(self) -> Path | None:
        """The file whose source defines the flags (the script, or the module's file)."""
        return self.script if self.script is not None else self.module_path


def find_target(command: list[str], cwd: Path) -> Target | None:
    """The launch command's script on disk; None when there is none (``-c``, a shell script, a binary)."""
    launch = parse_launch(command)
    if not launch.head:
        return None
    exe = launch.head[0]
    python = sys.executable
    if launch.python is not None:
        if os.sep in exe:
            python = str(exe if Path(exe).is_absolute() else cwd / exe)
        else:
            python = shutil.which(exe) or sys.executable
    args = list(launch.args)
    if launch.module:
        return Target(python=python, script=None, module=launch.module, args=args, module_path=_module_file(launch.module, cwd))
    if not launch.script:
        return None
    path = Path(launch.script)
    if not path.is_absolute():
        path = cwd / path
    if not _is_file(path):
        return None
    if launch.script == exe and path.suffix != ".py" and not _has_python_shebang(path):
        return None  # a shell script or a binary: not Python source
    return Target(python=python, script=path, module=None, args=args)


def _module_file(module: str, cwd: Path) -> Path | None:
    """``pkg.train`` -> ``cwd/pkg/train.py`` (or ``pkg/train/__main__.py``), when it is there."""
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module):
        return None
    base = cwd.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if _is_file(candidate):
            return candidate
    return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _has_python_shebang(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first
