"""meta.json's decode step: the same checks as the records (:mod:`memtop.runs.checks`), except
that a bad field is dropped (reads as ``None``, named in ``RunMeta.dropped``) and the rest of the
file is kept: one bad value must not lose the run's command and times.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from memtop.runs.checks import (
    MAX_PATH,
    MAX_PATH_PART,
    MAX_STR,
    Bad,
    depth_ok,
    json_list,
    json_obj,
    opt_count,
    short_str,
    signed,
    unix_time,
)
from memtop.runs.decode import Skip
from memtop.runs.flag_entry import FlagEntry, flags_from_json, flags_to_json
from memtop.runs.records import Device, RunMeta

MAX_META: Final = 4 << 20  # bytes of meta.json


def _command(v: Any) -> tuple[str, ...]:
    items = json_list(v, "command")
    return tuple(short_str(a, "command[]") or "" for a in items)


def _cwd(v: Any) -> str | None:
    cwd = short_str(v, "cwd")
    if cwd is not None and (len(cwd) > MAX_PATH or any(len(part) > MAX_PATH_PART for part in cwd.split("/")) or "\0" in cwd):
        raise Bad("cwd: not a usable path")
    return cwd


def _devices(v: Any) -> tuple[Device, ...]:
    out: list[Device] = []
    for d in json_list(v, "devices"):
        dd = json_obj(d, "devices[]")
        kind = dd.get("kind")
        out.append(
            Device(
                index=opt_count(dd.get("index"), "devices[].index"),
                name=short_str(dd.get("name"), "devices[].name", 256),
                total_bytes=opt_count(dd.get("total_bytes"), "devices[].total_bytes"),
                kind=kind if kind in ("cuda", "cpu") else "unknown",
            )
        )
    return tuple(out)


def _flags(v: Any) -> tuple[FlagEntry, ...] | None:
    """meta.json's detected flags; entries that are not flags are left out (at most 512 read)."""
    if v is None:
        return None
    return tuple(flags_from_json(json_list(v, "detected_flags")))


_META_FIELDS: Final[dict[str, Callable[[Any], Any]]] = {
    "schema": lambda v: opt_count(v, "schema"),
    "run_id": lambda v: short_str(v, "run_id", 256),
    "command": _command,
    "cwd": _cwd,
    "started_at": lambda v: unix_time(v, "started_at"),
    "ended_at": lambda v: unix_time(v, "ended_at"),
    "exit_code": lambda v: signed(v, "exit_code"),
    "status": lambda v: short_str(v, "status", 64),
    "signal": lambda v: signed(v, "signal"),
    "memtop_version": lambda v: short_str(v, "memtop_version", 64),
    "torch_version": lambda v: short_str(v, "torch_version", 64),
    "python_version": lambda v: short_str(v, "python_version", 64),
    "host": lambda v: short_str(v, "host", 256),
    "pid": lambda v: opt_count(v, "pid"),
    "child_pid": lambda v: opt_count(v, "child_pid"),
    "devices": _devices,
    "detected_flags": _flags,
    "max_steps": lambda v: opt_count(v, "max_steps"),
}


def sanitize_meta(obj: Any) -> tuple[dict[str, Any], list[str]] | None:
    """meta.json's JSON value -> (the same dict with every bad or unbounded value set to None or
    left out, the names of those keys); None when it is not an object. Unknown keys are kept when
    they are bounded."""
    if not isinstance(obj, dict):
        return None
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for k, v in obj.items():
        if len(k) > MAX_STR:
            dropped.append(k[:64])
            continue
        check = _META_FIELDS.get(k)
        if check is None:
            if depth_ok(v, 8):
                out[k] = v
            else:
                dropped.append(k[:64])
            continue
        try:
            value = check(v)
        except Bad:
            out[k] = None
            dropped.append(k)
            continue
        out[k] = flags_to_json(value) if k == "detected_flags" and value is not None else v
    return out, dropped


def meta_from_dict(doc: Mapping[str, Any], dropped: tuple[str, ...] = ()) -> RunMeta:
    """A sanitized meta dict (see :func:`sanitize_meta`) -> :class:`RunMeta`."""
    values = {k: check(doc[k]) for k, check in _META_FIELDS.items() if k in doc}
    return RunMeta(**values, dropped=dropped, doc=doc)


def decode_meta(text: bytes | str) -> RunMeta | Skip:
    """meta.json's bytes -> :class:`RunMeta` (bad fields dropped), or why the file is unusable."""
    if len(text) > MAX_META:
        return Skip("too_long")
    try:
        obj = json.loads(text)
    except RecursionError:
        return Skip("too_deep")
    except ValueError as exc:
        return Skip("bad_json", str(exc)[:100])
    got = sanitize_meta(obj)
    if got is None:
        return Skip("not_object")
    doc, dropped = got
    return meta_from_dict(doc, tuple(dropped))
