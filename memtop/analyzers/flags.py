"""Find the training script's own flags, so that advice names a flag the script really has.

Two sources, merged (the user's word wins):

* ``argparse``: the script is run once with ``--help`` (in the run's cwd, stdin closed, a timeout,
  no GPU, no bytecode written, the memtop hook off). A small bootstrap makes argparse report the
  parser's actions as JSON the moment the script asks it to parse, then exits; that gives exact
  dests, defaults, types and choices. When no argparse parser is seen (click, a hand-rolled
  parser) the printed help text is parsed instead.
* ``pyproject``: ``[tool.memtop.flags]`` in the nearest ``pyproject.toml`` from the run's cwd
  upward; see docs/analyze.md for the table's shape.

Nothing here raises: any failure gives fewer flags, never an exception.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

FlagEntry = dict[str, Any]

KINDS = ("int", "float", "bool", "choice", "str")

# Interpreter options that take a value as the next argument (`python -W ignore x.py`).
_PY_OPTS_WITH_VALUE = {"-W", "-X", "--check-hash-based-pycs"}
# torchrun / torch.distributed.run options that take no value; every other option takes one.
_TORCHRUN_BARE = {
    "--standalone",
    "--no-python",
    "--no_python",
    "--run-path",
    "--run_path",
    "-m",
    "--module",
}
_TORCHRUN_MODULES = {"torch.distributed.run", "torch.distributed.launch"}
_TORCHRUN_NAMES = {"torchrun"}
# Launchers whose first non-option argument is the script (`accelerate launch x.py`, `deepspeed x.py`).
_BARE_LAUNCHERS = {"deepspeed"}


@dataclass(frozen=True)
class Target:
    """What to ask for ``--help``: a script path or a module, the interpreter, and the script's args."""

    python: str
    script: Path | None
    module: str | None
    args: list[str]


def _is_python(exe: str) -> bool:
    name = Path(exe).name
    return bool(re.fullmatch(r"python(\d+(\.\d+)?)?(\.exe)?|pypy\d*", name))


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
        if a.startswith("-") and a != "--":
            i += 1
            continue
        if a == "--":
            i += 1
            continue
        return a, None, i + 1
    return None, None, len(argv)


def _after_torchrun_options(argv: list[str], i: int) -> tuple[str | None, str | None, int]:
    """Skip torchrun's own options; return (script, module, index after it)."""
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
        if "=" in a or opt in _TORCHRUN_BARE:
            i += 1
        else:
            i += 2
    if i >= len(argv):
        return None, None, len(argv)
    return (None, argv[i], i + 1) if as_module else (argv[i], None, i + 1)


def find_target(command: list[str], cwd: Path) -> Target | None:
    """Locate the training script (or module) inside a launch command; None when there is none.

    Handles ``python [opts] script.py``, ``python -m module``, ``torchrun [opts] script.py``,
    ``python -m torch.distributed.run [opts] script.py``, ``accelerate launch [opts] script.py``,
    ``deepspeed script.py`` and an executable script with a python shebang.
    """
    if not command:
        return None
    exe = command[0]
    python = sys.executable
    script: str | None = None
    module: str | None = None
    rest = len(command)
    name = Path(exe).name
    if _is_python(exe):
        resolved = shutil.which(exe) if os.sep not in exe else str((cwd / exe) if not Path(exe).is_absolute() else exe)
        python = resolved or sys.executable
        script, module, rest = _after_python_options(command, 1)
        if module in _TORCHRUN_MODULES:
            script, module, rest = _after_torchrun_options(command, rest)
    elif name in _TORCHRUN_NAMES:
        script, module, rest = _after_torchrun_options(command, 1)
    elif name == "accelerate" and len(command) > 1 and command[1] == "launch":
        script, module, rest = _after_torchrun_options(command, 2)
    elif name in _BARE_LAUNCHERS:
        script, module, rest = _after_torchrun_options(command, 1)
    else:
        script, rest = exe, 1
    if module:
        return Target(python=python, script=None, module=module, args=command[rest:])
    if not script:
        return None
    path = Path(script)
    if not path.is_absolute():
        path = cwd / path
    if not path.is_file():
        return None
    if script == exe and not _has_python_shebang(path) and path.suffix != ".py":
        return None  # a shell script or binary: running it with --help could do anything
    return Target(python=python, script=path, module=None, args=command[rest:])


def _has_python_shebang(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


# Runs the script as `python script.py --help` would, but reports argparse's actions first.
_BOOTSTRAP = r"""
import argparse, json, os, runpy, sys
_out = os.environ.pop("MEMTOP_FLAGS_OUT")
def _kind(a):
    if a.nargs == 0:
        return "bool"
    if a.choices is not None:
        return "choice"
    t = a.type
    if t is int or isinstance(a.default, int) and not isinstance(a.default, bool):
        return "int"
    if t is float or isinstance(a.default, float):
        return "float"
    return "str"
def _s(v):
    if v is None or v is argparse.SUPPRESS:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return str(v)
def _dump(parser):
    acts = []
    for a in parser._actions:
        if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            continue
        neg = [o for o in a.option_strings if o.startswith("--no-")]
        acts.append({
            "options": list(a.option_strings),
            "negative": neg,
            "dest": a.dest,
            "kind": _kind(a),
            "choices": None if a.choices is None else [str(c) for c in a.choices],
            "default": _s(a.default),
            "const": _s(getattr(a, "const", None)),
            "store_false": isinstance(a, argparse._StoreFalseAction),
            "help": (a.help or "")[:200] if a.help is not argparse.SUPPRESS else "",
        })
    with open(_out, "w") as fh:
        json.dump(acts, fh)
    sys.stdout.flush()
    os._exit(0)
def _patched(self, args=None, namespace=None):
    _dump(self)
argparse.ArgumentParser.parse_known_args = _patched
if hasattr(argparse.ArgumentParser, "parse_known_intermixed_args"):
    argparse.ArgumentParser.parse_known_intermixed_args = _patched
target = sys.argv[1]
sys.argv = sys.argv[2:]
if target == "-m":
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _probe_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MEMTOP_DISABLE": "1",  # never profile the probe
            "CUDA_VISIBLE_DEVICES": "",  # a --help never needs the GPU
            "PYTHONDONTWRITEBYTECODE": "1",  # leave no __pycache__ behind
            "COLUMNS": "200",  # argparse wraps help to the terminal width
            "TERM": "dumb",
        }
    )
    for key in ("MEMTOP_RUN_DIR", "PYTHONSTARTUP"):
        env.pop(key, None)
    # Drop memtop's injected sitecustomize directory, if the caller has one on PYTHONPATH.
    if env.get("PYTHONPATH"):
        parts = [p for p in env["PYTHONPATH"].split(os.pathsep) if "_inject" not in p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def _run_help(target: Target, cwd: Path, timeout: float) -> tuple[list[dict[str, Any]] | None, str]:
    """Run the help probe; return (argparse actions or None, printed help text)."""
    import subprocess  # only when a script is probed: `memtop analyze` rarely needs it
    import tempfile

    with tempfile.TemporaryDirectory(prefix="memtop-flags-") as tmp:
        out = Path(tmp) / "actions.json"
        env = _probe_env()
        env["MEMTOP_FLAGS_OUT"] = str(out)
        if target.module:
            argv = [target.python, "-c", _BOOTSTRAP, "-m", target.module, "--help"]
        else:
            argv = [target.python, "-c", _BOOTSTRAP, "_", str(target.script), "--help"]
        try:
            proc = subprocess.Popen(
                argv,
                cwd=str(cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a timeout can end the probe's whole process group
            )
        except OSError:
            return None, ""
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None, ""
        text = stdout.decode("utf-8", "replace")
        actions: list[dict[str, Any]] | None = None
        try:
            loaded = json.loads(out.read_text(encoding="utf-8"))
            if isinstance(loaded, list):
                actions = [a for a in loaded if isinstance(a, dict)]
        except (OSError, ValueError):
            actions = None
        return actions, text


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass


def _pick_flag(options: list[str], negative: list[str]) -> str:
    longs = [o for o in options if o.startswith("--") and o not in negative]
    if longs:
        return longs[0]
    return options[0]


def _from_actions(actions: list[dict[str, Any]]) -> list[FlagEntry]:
    entries: list[FlagEntry] = []
    for a in actions:
        options = [str(o) for o in a.get("options") or []]
        if not options:
            continue
        negative = [str(o) for o in a.get("negative") or []]
        kind = a.get("kind") if a.get("kind") in KINDS else "str"
        default = a.get("default")
        if kind == "bool" and default is None:
            default = "false"
        entries.append(
            {
                "flag": _pick_flag(options, negative),
                "value": default,
                "dest": str(a.get("dest") or ""),
                "kind": kind,
                "choices": a.get("choices"),
                "source": "argparse",
                "default": default,
                "aliases": [o for o in options if o != _pick_flag(options, negative)],
                "store_false": bool(a.get("store_false")),
                "help": str(a.get("help") or ""),
            }
        )
    return entries


# --- parsing printed help text (fallback) -------------------------------------------------------

_OPT_LINE = re.compile(r"^\s{1,8}(-{1,2}[A-Za-z0-9][^\s,=]*(?:[ =](?:\{[^}]*\}|\[[^\]]*\]|[^\s,-]\S*))?(?:,\s*-{1,2}[A-Za-z0-9][^\s,=]*(?:[ =](?:\{[^}]*\}|\[[^\]]*\]|[^\s,-]\S*))?)*)(?:\s{2,}(.*))?$")
_DEFAULT_RE = re.compile(r"\(default:?\s*([^)]*)\)|\[default:?\s*([^\]]*)\]", re.IGNORECASE)


def parse_help_text(text: str) -> list[FlagEntry]:
    """Flags from argparse-style (or click-style) help text: option lines and their help."""
    entries: list[FlagEntry] = []
    current: FlagEntry | None = None
    for line in text.splitlines():
        m = _OPT_LINE.match(line)
        if m:
            current = _entry_from_spec(m.group(1), m.group(2) or "")
            if current is not None:
                entries.append(current)
            continue
        if current is not None and line.startswith(" " * 10) and line.strip():
            current["help"] = (current["help"] + " " + line.strip()).strip()
            _apply_default(current)
        elif not line.strip():
            current = None
    return [e for e in entries if e["dest"] not in ("help", "version")]


def _entry_from_spec(spec: str, help_text: str) -> FlagEntry | None:
    options: list[str] = []
    metavar: str | None = None
    for part in re.split(r",\s*(?=-)", spec):
        bits = re.split(r"[ =]", part, maxsplit=1)
        options.append(bits[0])
        if len(bits) > 1:
            metavar = bits[1]
    negative = [o for o in options if o.startswith("--no-")]
    flag = _pick_flag(options, negative)
    dest = flag.lstrip("-").replace("-", "_")
    choices: list[str] | None = None
    kind = "bool"
    if metavar:
        kind = "str"
        cm = re.fullmatch(r"\{([^}]*)\}|\[([^\]]*)\]", metavar)
        if cm:
            body = cm.group(1) if cm.group(1) is not None else cm.group(2)
            choices = [c for c in re.split(r"[,|]", body) if c]
            kind = "choice"
        elif metavar.upper() in ("N", "INT", "INTEGER", "NUM"):
            kind = "int"
        elif metavar.upper() in ("FLOAT", "LR", "X"):
            kind = "float"
    entry: FlagEntry = {
        "flag": flag,
        "value": None,
        "dest": dest,
        "kind": kind,
        "choices": choices,
        "source": "argparse",
        "default": None if kind != "bool" else "false",
        "aliases": [o for o in options if o != flag],
        "store_false": False,
        "help": help_text.strip(),
    }
    _apply_default(entry)
    return entry


def _apply_default(entry: FlagEntry) -> None:
    m = _DEFAULT_RE.search(entry["help"])
    if not m:
        return
    raw = (m.group(1) if m.group(1) is not None else m.group(2) or "").strip().strip("'\"")
    if raw in ("None", ""):
        return
    if entry["kind"] == "bool":
        entry["default"] = "true" if raw.lower() == "true" else "false"
    else:
        entry["default"] = raw
        if entry["kind"] == "str":
            entry["kind"] = _kind_of_value(raw)
    entry["value"] = entry["default"]


def _kind_of_value(raw: str) -> str:
    try:
        int(raw)
        return "int"
    except ValueError:
        pass
    try:
        float(raw)
        return "float"
    except ValueError:
        return "str"


# --- pyproject ------------------------------------------------------------------------------------


def find_pyproject(cwd: Path) -> Path | None:
    """The nearest ``pyproject.toml`` from ``cwd`` upward."""
    try:
        here = cwd.resolve()
    except OSError:
        return None
    for d in (here, *here.parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def pyproject_flags(cwd: Path) -> list[FlagEntry]:
    """``[tool.memtop.flags]``: ``role = "--flag"`` or ``role = {flag = "--flag", kind = ..., ...}``.

    A role names what the flag controls (``batch_size``, ``gradient_accumulation``,
    ``mixed_precision``, ``gradient_checkpointing``, ``frames``, ``resolution``,
    ``half_precision``, ``empty_cache``, …); a flag that does not start with ``-`` is written as
    a ``key=value`` override (Hydra style).
    """
    path = find_pyproject(cwd)
    if path is None:
        return []
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return []
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, ValueError):
        return []
    table = data.get("tool", {}).get("memtop", {}).get("flags", {})
    if not isinstance(table, dict):
        return []
    out: list[FlagEntry] = []
    for role, spec in table.items():
        if isinstance(spec, str):
            spec = {"flag": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("flag"), str) or not spec["flag"]:
            continue
        flag = spec["flag"]
        kind = spec.get("kind") if spec.get("kind") in KINDS else None
        choices = spec.get("choices")
        choices = [str(c) for c in choices] if isinstance(choices, list) else None
        default = spec.get("default")
        default = None if default is None else (str(default).lower() if isinstance(default, bool) else str(default))
        if kind is None:
            kind = "choice" if choices else (_kind_of_value(default) if default is not None else "str")
        out.append(
            {
                "flag": flag,
                "value": default if default is not None else ("false" if kind == "bool" else None),
                "dest": str(spec.get("dest") or flag.lstrip("-").replace("-", "_").replace(".", "_")),
                "kind": kind,
                "choices": choices,
                "source": "pyproject",
                "default": default,
                "aliases": [],
                "store_false": False,
                "help": str(spec.get("help") or ""),
                "role": str(role),
            }
        )
    return out


# --- current values from the command line ---------------------------------------------------------


def apply_command_values(entries: list[FlagEntry], args: list[str]) -> None:
    """Set each entry's ``value`` from the script's own arguments (last occurrence wins)."""
    by_option: dict[str, FlagEntry] = {}
    for e in entries:
        for o in [e["flag"], *e.get("aliases", [])]:
            by_option[o] = e
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        key, eq, inline = a.partition("=")
        found = by_option.get(key)
        if found is None:
            i += 1
            continue
        e = found
        if not e["flag"].startswith("-"):  # key=value override
            if eq:
                e["value"] = inline
            i += 1
            continue
        if e["kind"] == "bool":
            negated = key.startswith("--no-") and key != e["flag"]
            on = not negated
            if e.get("store_false"):
                on = not on
            e["value"] = "true" if on else "false"
            i += 1
        elif eq:
            e["value"] = inline
            i += 1
        elif i + 1 < len(args):
            e["value"] = args[i + 1]
            i += 2
        else:
            i += 1


def detect_flags(command: list[str], cwd: Path, timeout: float = 10.0) -> list[FlagEntry]:
    """The script's flags with their current values; [] when they cannot be found. Never raises.

    Each entry: ``flag``, ``value`` (from the command line, else the default), ``dest``, ``kind``
    (int/float/bool/choice/str), ``choices``, ``source`` (argparse/pyproject), plus ``default``,
    ``aliases``, ``help`` and, for pyproject entries, ``role``.
    """
    try:
        return _detect(list(command), Path(cwd), timeout)
    except Exception:  # noqa: BLE001 - flag detection is a best effort and must never break a run
        return []


def _detect(command: list[str], cwd: Path, timeout: float) -> list[FlagEntry]:
    target = find_target(command, cwd)
    entries: list[FlagEntry] = []
    if target is not None:
        actions, text = _run_help(target, cwd, timeout)
        if actions:
            entries = _from_actions(actions)
        elif text:
            entries = parse_help_text(text)
    user = pyproject_flags(cwd)
    if user:
        taken = {e["flag"] for e in user}
        entries = [e for e in entries if e["flag"] not in taken] + user
    args = target.args if target is not None else command[1:]
    apply_command_values(entries, args)
    return entries


def format_command(argv: list[str], env: dict[str, str] | None = None) -> str:
    """A shell-ready command line (``VAR=value cmd args``)."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*prefix, *(shlex.quote(a) for a in argv)])
