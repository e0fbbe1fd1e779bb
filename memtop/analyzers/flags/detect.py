"""Flag detection, once, at ``memtop train`` launch: the source first, a probe only as a last resort.

The result goes into ``meta.json`` (``detected_flags``); every reader (``analyze``, the dashboard,
``compare``…) uses only what is stored there and never looks at, let alone runs, the script.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from memtop.analyzers.flags.ast_configurator import assigned_values
from memtop.analyzers.flags.helptext import from_actions, parse_help_text
from memtop.analyzers.flags.launch import Target, find_target
from memtop.analyzers.flags.probe import run_help_probe, stop_probes
from memtop.analyzers.flags.pyproject import declared_syntax, pyproject_flags
from memtop.analyzers.flags.static import read_source_flags, read_source_text
from memtop.analyzers.flags.values import apply_command_values, flags_in_command
from memtop.runs.flag_entry import FlagEntry, flags_to_json


def detect_flags(command: list[str], cwd: Path, timeout: float = 10.0, probe: bool = True) -> list[FlagEntry]:
    """The script's flags with their current values and spelling; [] when none are found. Never raises.

    ``probe=False`` never starts a process, even for a parser the source cannot spell.
    """
    try:
        return _detect([str(a) for a in command], Path(cwd), timeout, probe)
    except Exception:  # noqa: BLE001 - detection is advice only; it must never break a run
        return []


def _detect(command: list[str], cwd: Path, timeout: float, probe: bool) -> list[FlagEntry]:
    target = find_target(command, cwd)
    entries: list[FlagEntry] = []
    args: list[str] = target.args if target is not None else command[1:]
    if target is not None and target.source_path is not None:
        static = read_source_flags(target.source_path)
        entries = static.entries
        if static.needs_probe and probe:
            entries = _merge(_probed(target, cwd, timeout), entries)
        entries = _config_file_values(entries, args, cwd)
    if not entries:
        entries = flags_in_command(args)
    user = pyproject_flags(cwd)
    if user:
        taken = {o for e in user for o in e.options}
        entries = [e for e in entries if not (set(e.options) & taken)] + user
    syntax = declared_syntax(cwd)
    if syntax is not None:
        entries = [e if e.source == "pyproject" else e.replace(syntax=syntax, bool_values=_bools_for(e, syntax)) for e in entries]
    return apply_command_values(entries, args, follow_command_style=syntax is None)


def _bools_for(entry: FlagEntry, syntax: str) -> tuple[str, str] | None:
    if entry.kind != "bool" or entry.bool_values is not None:
        return entry.bool_values
    return ("true", "false") if syntax == "override" else None


def _probed(target: Target, cwd: Path, timeout: float) -> list[FlagEntry]:
    actions, text = run_help_probe(target, cwd, timeout)
    if actions:
        return from_actions(actions)
    return parse_help_text(text) if text else []


def _merge(first: list[FlagEntry], then: list[FlagEntry]) -> list[FlagEntry]:
    taken = {o for e in first for o in e.options}
    return first + [e for e in then if not (set(e.options) & taken)]


def _config_file_values(entries: list[FlagEntry], args: list[str], cwd: Path) -> list[FlagEntry]:
    """``python train.py config/small.py``: a configurator's config file sets values (read, not run)."""
    if not any(e.source == "configurator" for e in entries):
        return entries
    values: dict[str, str] = {}
    for a in args:
        if "=" not in a and not a.startswith("-") and a.endswith(".py"):
            text = read_source_text(cwd / a)
            if text is not None:
                values.update(assigned_values(text))
    if not values:
        return entries
    return [e.replace(value=values[e.dest]) if e.source == "configurator" and e.dest in values else e for e in entries]


class FlagDetection:
    """Detection in a background thread for ``memtop train``, ended on every way out by :meth:`stop`.

    ``store`` receives ``detected_flags`` as JSON (``memtop train`` writes it into ``meta.json``).
    """

    def __init__(self, command: list[str], cwd: Path, store: Callable[[list[dict[str, object]]], None], timeout: float = 10.0) -> None:
        self._command = list(command)
        self._cwd = cwd
        self._store = store
        self._timeout = timeout
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._work, name="memtop-detect-flags", daemon=True)

    def start(self) -> FlagDetection:
        self._thread.start()
        return self

    def _work(self) -> None:
        flags = detect_flags(self._command, self._cwd, timeout=self._timeout, probe=not self._stopped.is_set())
        try:
            self._store(flags_to_json(flags))
        except Exception:  # noqa: BLE001 - the run goes on without stored flags
            return

    def stop(self, wait: float = 2.0) -> None:
        """End a running probe (its whole process group) and wait briefly for the thread, which
        still stores what the source said."""
        self._stopped.set()
        stop_probes()
        if self._thread.is_alive():
            self._thread.join(wait)

    def __enter__(self) -> FlagDetection:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
