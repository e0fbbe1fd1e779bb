"""Create, name, find and list run directories; read and atomically update ``meta.json``."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from memtop.errors import MemtopError
from memtop.runs.format import META_FILE, SCHEMA_VERSION
from memtop.runs.meta_decode import MAX_META, meta_from_dict, sanitize_meta
from memtop.runs.recordfiles import file_key
from memtop.runs.records import RunMeta
from memtop.runs.safeio import Unreadable, exists, is_dir, list_dir, read_bounded
from memtop.version import __version__

DEFAULT_RUNS_DIR = "memtop_runs"
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
_RUN_ID_RE = re.compile(r"^\d{8}-\d{6}-")


def default_runs_dir() -> Path:
    return Path(os.environ.get("MEMTOP_RUNS_DIR") or DEFAULT_RUNS_DIR)


def sanitize_name(name: str) -> str:
    cleaned = _NAME_RE.sub("-", name).strip("-.")
    return cleaned[:60] or "run"


def _package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata: version unknown
        return None


def create_run_dir(runs_dir: Path, name: str, now: float | None = None) -> Path:
    """Create ``<runs_dir>/<YYYYmmdd-HHMMSS-name>`` (made unique with ``-2``, ``-3`` …)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    base = f"{stamp}-{sanitize_name(name)}"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MemtopError(f"cannot create runs directory {runs_dir}: {exc.strerror or exc}") from exc
    if not os.access(runs_dir, os.W_OK | os.X_OK):
        raise MemtopError(f"runs directory {runs_dir} is not writable")
    for attempt in range(1, 1000):
        run_id = base if attempt == 1 else f"{base}-{attempt}"
        path = runs_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise MemtopError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc
        return path
    raise MemtopError(f"cannot find a free run id under {runs_dir} for {base}")


def new_meta(run_dir: Path, command: list[str], devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "run_id": run_dir.name,
        "command": list(command),
        "cwd": os.getcwd(),
        "started_at": time.time(),
        "ended_at": None,
        "exit_code": None,
        "status": "running",
        "memtop_version": __version__,
        "torch_version": _package_version("torch"),
        "python_version": sys.version.split()[0],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "devices": devices,
        "detected_flags": [],
    }


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    """Write meta.json atomically (temp file + rename) so a reader never sees half a file.

    The temp file is flushed to disk before the rename: otherwise a crash of the machine soon
    after can leave the new name pointing at an empty file (ext4, xfs without data journaling)."""
    target = run_dir / META_FILE
    tmp = run_dir / f".{META_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def _read_meta(run_dir: Path) -> tuple[dict[str, Any] | None, tuple[str, ...], str | None]:
    """(sanitized meta dict or None, dropped keys, why it is None)."""
    try:
        raw = read_bounded(run_dir / META_FILE, MAX_META)
    except Unreadable as exc:
        return None, (), exc.why
    try:
        obj = json.loads(raw)
    except RecursionError:
        return None, (), "nested too deeply"
    except ValueError:
        return None, (), "not JSON"
    got = sanitize_meta(obj)
    if got is None:
        return None, (), "not a JSON object"
    return got[0], tuple(got[1]), None


def read_meta(run_dir: Path) -> dict[str, Any] | None:
    """meta.json as a dict (every value validated as in :mod:`memtop.runs.decode`; bad ones are
    None), or None when it is missing or unreadable. For code that updates meta.json; readers use
    :func:`load_meta`."""
    return _read_meta(run_dir)[0]


def load_meta(run_dir: Path) -> tuple[RunMeta | None, str | None]:
    """(the typed meta.json, or None and why it could not be read)."""
    doc, dropped, why = _read_meta(run_dir)
    if doc is None:
        return None, why
    return meta_from_dict(doc, dropped), None


def update_meta(run_dir: Path, **changes: Any) -> dict[str, Any]:
    meta = read_meta(run_dir) or {"schema": SCHEMA_VERSION, "run_id": run_dir.name}
    meta.update(changes)
    write_meta(run_dir, meta)
    return meta


def is_run_dir(path: Path) -> bool:
    """A listable directory holding meta.json or a record file (never raises)."""
    if not is_dir(path):
        return False
    try:
        entries = list_dir(path)
    except Unreadable:
        return False
    return any(p.name == META_FILE or file_key(p.name) is not None for p in entries)


def scan_runs(runs_dir: Path) -> tuple[list[Path], list[str]]:
    """(run directories under ``runs_dir``, newest first by start time then name; one note per
    entry that looks like a run but cannot be read: an unreadable directory, a symlink loop)."""
    if not is_dir(runs_dir):
        return [], []
    try:
        entries = list_dir(runs_dir)
    except Unreadable as exc:
        return [], [str(exc)]
    runs: list[Path] = []
    notes: list[str] = []
    for p in entries:
        if p.name.startswith("."):
            continue
        if is_dir(p):
            try:
                list_dir(p)
            except Unreadable as exc:
                notes.append(f"skipped {exc}")
                continue
            if is_run_dir(p):
                runs.append(p)
        elif not exists(p) and os.path.islink(p):
            notes.append(f"skipped {p}: a broken symlink or a symlink loop")

    def key(p: Path) -> tuple[float, str]:
        meta = load_meta(p)[0]
        started = meta.started_at if meta else None
        if started is None:
            try:
                started = p.stat().st_mtime
            except OSError:
                started = 0.0
        return (float(started), p.name)

    return sorted(runs, key=key, reverse=True), notes


def check_listable(runs_dir: Path) -> None:
    """MemtopError (exit 2) when the runs directory itself cannot be listed."""
    try:
        list_dir(runs_dir)
    except Unreadable as exc:
        raise MemtopError(f"cannot read runs directory {exc}") from None


def list_runs(runs_dir: Path) -> list[Path]:
    """Run directories under ``runs_dir``, newest first (by start time, then by name)."""
    return scan_runs(runs_dir)[0]


def resolve_run(spec: str | None, runs_dir: Path | None = None) -> Path:
    """Turn ``latest``, a run id or a path into a run directory, or raise MemtopError."""
    runs_dir = runs_dir if runs_dir is not None else default_runs_dir()
    if spec is None or spec == "latest":
        if not is_dir(runs_dir):
            raise MemtopError(f"no runs directory at {runs_dir} (run `memtop train` first, or pass --runs-dir)")
        check_listable(runs_dir)
        runs = list_runs(runs_dir)
        if not runs:
            raise MemtopError(f"no runs in {runs_dir}")
        return runs[0]
    if len(spec) > 4096 or "\0" in spec:
        raise MemtopError("the run name is not a usable path")
    as_path = Path(spec)
    if is_dir(as_path):
        try:
            list_dir(as_path)
        except Unreadable as exc:
            raise MemtopError(f"cannot read run {exc}") from None
        if is_run_dir(as_path):
            return as_path
        raise MemtopError(f"{spec} is not a memtop run directory (no meta.json or rank*.jsonl)")
    candidate = runs_dir / spec
    if is_dir(candidate):
        try:
            list_dir(candidate)
        except Unreadable as exc:
            raise MemtopError(f"cannot read run {exc}") from None
        if is_run_dir(candidate):
            return candidate
    if is_dir(runs_dir):
        matches = [p for p in list_runs(runs_dir) if p.name.endswith(spec) or p.name.startswith(spec)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches[:5])
            raise MemtopError(f"run {spec!r} is ambiguous: {names}")
    raise MemtopError(f"no run {spec!r} in {runs_dir}")


def looks_like_run_id(text: str) -> bool:
    return bool(_RUN_ID_RE.match(text))
