"""The ``--help`` probe: the last resort, for a parser the source shows but cannot spell statically.

It runs only from ``memtop train`` (never from a verb that reads a run directory) and only when
:mod:`memtop.analyzers.flags.static` says the script builds a parser it cannot read. It runs in
its own session (process group), in the run's cwd with stdin closed, no GPU, no bytecode
written and the memtop hook off; a bootstrap makes argparse report the parser's actions and exit
the moment the script asks it to parse. It is bounded three ways: a timeout here, a watchdog
inside the probe (its own deadline, and the death of memtop), and :func:`stop_probes`, which
memtop calls on every way out (and ``atexit``). Its whole group is killed when it ends.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from memtop.analyzers.flags.launch import Target

# Runs the script as `python script.py --help` would, but reports argparse's actions first.
_BOOTSTRAP = r"""
import argparse, json, os, runpy, signal, sys, threading, time
_out = os.environ.pop("MEMTOP_FLAGS_OUT")
_limit = float(os.environ.pop("MEMTOP_PROBE_LIMIT", "10"))
_parent = os.getppid()
_deadline = time.monotonic() + _limit
def _watch():
    while True:
        time.sleep(0.1)
        if os.getppid() != _parent or time.monotonic() > _deadline:
            try:
                os.killpg(0, signal.SIGKILL)
            finally:
                os._exit(1)
threading.Thread(target=_watch, daemon=True).start()
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
        acts.append({
            "options": list(a.option_strings),
            "negative": [o for o in a.option_strings if o.startswith("--no-")],
            "dest": a.dest,
            "kind": _kind(a),
            "choices": None if a.choices is None else [str(c) for c in a.choices],
            "default": _s(a.default),
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

_MAX_OUTPUT = 1 << 20
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def probe_env(timeout: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MEMTOP_DISABLE": "1",  # never profile the probe
            "CUDA_VISIBLE_DEVICES": "",  # a --help never needs the GPU
            "PYTHONDONTWRITEBYTECODE": "1",  # leave no __pycache__ behind
            "COLUMNS": "200",  # argparse wraps help to the terminal width
            "TERM": "dumb",
            "MEMTOP_PROBE_LIMIT": str(max(0.5, timeout + 1.0)),
        }
    )
    for key in ("MEMTOP_RUN_DIR", "PYTHONSTARTUP"):
        env.pop(key, None)
    if env.get("PYTHONPATH"):  # drop memtop's injected sitecustomize directory
        env["PYTHONPATH"] = os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if "_inject" not in p)
    return env


def run_help_probe(target: Target, cwd: Path, timeout: float) -> tuple[list[dict[str, Any]] | None, str]:
    """Run the probe; return (argparse actions or None, printed help text). Never raises."""
    with tempfile.TemporaryDirectory(prefix="memtop-flags-") as tmp:
        out = Path(tmp) / "actions.json"
        env = probe_env(timeout)
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
                start_new_session=True,  # its own process group: one killpg ends all of it
            )
        except (OSError, ValueError):
            return None, ""
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, ""
        finally:
            _kill_group(proc)  # every way out, a normal end included: nothing it started survives
        text = stdout[:_MAX_OUTPUT].decode("utf-8", "replace")
        actions: list[dict[str, Any]] | None = None
        try:
            loaded = json.loads(out.read_text(encoding="utf-8"))
            if isinstance(loaded, list):
                actions = [a for a in loaded if isinstance(a, dict)]
        except (OSError, ValueError):
            actions = None
        return actions, text


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass
    with _LIVE_LOCK:
        _LIVE.discard(proc)


def live_probes() -> list[int]:
    """Process ids of probes still running (for tests and for memtop's own exit paths)."""
    with _LIVE_LOCK:
        return [p.pid for p in _LIVE]


def stop_probes() -> None:
    """Kill every running probe's process group now. Safe from any thread, at any time."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


atexit.register(stop_probes)
