"""Seeded mutation of real recorded runs, fed to the read-only verbs in process.

Shared by tests/test_fuzz_runs.py (a few hundred cases per CI run) and benchmarks/fuzz_runs.py
(≥10,000). A case copies one source run (the recorded fixtures in tests/fixtures/runs, a
synthetic multi-rank CUDA run with every record type, and a run the hook's writer wrote in run
format v2: step deltas and the step index), applies one to three mutations to its rank
files or meta.json (truncate, flip bytes, drop keys, change types, huge/negative/NaN numbers,
1e309, deep nesting, long strings, a 5,000-character cwd, garbage and unknown lines) and runs
``analyze --json`` (or the text report), ``compare --json`` against the unmutated source and
``export --csv``. What must hold: every call returns 0, or 1/2 with exactly one ``memtop: `` line on
stderr; no exception escapes ``memtop.cli.main``; no call takes more than :data:`CALL_LIMIT_S`.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longrun import write_hook_run
from runfactory import GiB, MiB, make_run

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs"
CALL_LIMIT_S = 30

HUGE = [
    "1" + "0" * 309,  # json accepts it; float() raises OverflowError
    "-" + "1" + "0" * 309,
    "1e309",  # float literal: inf
    "-1e309",
    "NaN",
    "Infinity",
    "-Infinity",
    "-1",
    "-4096",
    "9223372036854775808",  # 2**63
    "1" + "0" * 5000,  # over Python's int digit limit
    "1e-320",
    "-0.0",
    "0.5",
    "true",
]
TYPES: list[Any] = ["a string", [], {}, True, False, None, 1.5, -3, [1, 2], {"k": "v"}, 0]


class _Raw:
    """Raw JSON text to splice in where json.dumps cannot write it."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def put(self, text: str) -> str:
        self.texts.append(text)
        return f"@@RAW{len(self.texts) - 1}@@"

    def dumps(self, obj: Any) -> str:
        out = json.dumps(obj, separators=(",", ":"))
        for i, text in enumerate(self.texts):
            out = out.replace(f'"@@RAW{i}@@"', text)
        return out


def _slots(obj: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) inside a JSON value."""
    out: list[tuple[Any, Any]] = []
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in x.items():
                out.append((x, k))
                stack.append(v)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                out.append((x, i))
                stack.append(v)
    return out


def _mutate_value(obj: Any, rng: random.Random, raw: _Raw) -> str:
    """One mutation inside a parsed JSON object; returns its name."""
    slots = _slots(obj)
    if not slots:
        return "none"
    container, key = rng.choice(slots)
    kind = rng.choice(["drop_key", "change_type", "huge", "huge", "deep", "long_string"])
    if kind == "drop_key" and isinstance(container, dict):
        del container[key]
    elif kind == "drop_key":
        container.pop(key)
    elif kind == "change_type":
        container[key] = rng.choice(TYPES)
    elif kind == "huge":
        container[key] = raw.put(rng.choice(HUGE))
    elif kind == "deep":
        n = rng.choice([20, 60, 3000, 200_000])
        container[key] = raw.put("[" * n + "]" * n if rng.random() < 0.5 else '{"a":' * n + "1" + "}" * n)
    else:
        container[key] = "x" * rng.choice([300, 5000, 70_000, 1_200_000])
    return kind


def _mutate_lines(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    lines = data.split(b"\n")
    kind = rng.choice(["value", "value", "value", "truncate", "flip", "garbage", "unknown", "shuffle", "empty", "huge_line"])
    if kind == "truncate":
        return data[: rng.randrange(max(1, len(data)))], kind
    if kind == "flip":
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            if buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        return bytes(buf), kind
    if kind == "garbage":
        lines.insert(rng.randrange(len(lines) + 1), bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))))
    elif kind == "unknown":
        extra = rng.choice([{"type": "zzz"}, {"type": "step", "schema": 99, "step": 1}, {"type": None}, [1, 2], "str", {"type": "step"}])
        lines.insert(rng.randrange(len(lines) + 1), json.dumps(extra).encode())
    elif kind == "shuffle":
        rng.shuffle(lines)
        lines += rng.sample(lines, min(3, len(lines)))
    elif kind == "empty":
        return b"", kind
    elif kind == "huge_line":
        lines.insert(rng.randrange(len(lines) + 1), b'{"type":"step","step":1,"x":"' + b"y" * (2 << 20) + b'"}')
    else:
        idx = [i for i, line in enumerate(lines) if line.strip()]
        if not idx:
            return data, "none"
        i = rng.choice(idx)
        try:
            obj = json.loads(lines[i])
        except (ValueError, RecursionError):  # an earlier mutation of this case made it so
            return data, "none"
        raw = _Raw()
        kind = _mutate_value(obj, rng, raw)
        lines[i] = raw.dumps(obj).encode()
    return b"\n".join(lines), kind


def _mutate_meta(path: Path, rng: random.Random) -> str:
    if not path.exists():
        return "none"
    kind = rng.choice(["value", "value", "cwd", "command", "truncate", "garbage", "delete", "not_object", "deep"])
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: rng.randrange(max(1, len(data)))])
    elif kind == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
    elif kind == "delete":
        path.unlink()
    elif kind == "not_object":
        path.write_text(rng.choice(["[]", "3", '"meta"', "null"]))
    elif kind == "deep":
        n = rng.choice([100, 100_000])
        path.write_text('{"schema": 1, "detected_flags": ' + "[" * n + "]" * n + "}")
    else:
        try:
            meta = json.loads(path.read_bytes())
        except (ValueError, RecursionError):
            return "none"
        if not isinstance(meta, dict):
            return "none"
        raw = _Raw()
        if kind == "cwd":
            meta["cwd"] = "/" + "a" * rng.choice([300, 5000, 100_000])
        elif kind == "command":
            meta["command"] = rng.choice([["python", 3, None], "python train.py", ["x" * 10_000], [[["deep"]]], list(range(5000))])
        else:
            kind = "meta_" + _mutate_value(meta, rng, raw)
        path.write_text(raw.dumps(meta))
    return "meta_" + kind if not kind.startswith("meta_") else kind


def sources(root: Path) -> list[Path]:
    """The runs every case starts from: the recorded fixtures and a synthetic CUDA run."""
    root.mkdir(parents=True, exist_ok=True)
    out = [p for p in sorted(FIXTURES.iterdir()) if p.is_dir()]
    extra: list[dict[str, Any]] = [
        {"type": "stage", "schema": 1, "rank": 0, "time": 1.0, "name": "decode", "step": 3, "duration": 0.2, "before": GiB, "after": 2 * GiB, "peak": 3 * GiB, "measure": "cuda_allocated"},
        {"type": "warning", "schema": 1, "rank": 0, "time": 2.0, "message": "hook slow", "source": "hook", "disabled": False},
        {"type": "oom", "schema": 1, "rank": 1, "time": 3.0, "step": 12, "device": "cuda:1", "message": "CUDA out of memory", "requested_bytes": 2 * GiB, "categories": {"parameters": 2 * GiB, "gradients": 2 * GiB, "optimizer_state": 4 * GiB, "activations": 60 * GiB, "other": GiB}, "allocated": 69 * GiB, "reserved": 70 * GiB, "device_free": 512 * MiB, "large_tensors": []},
        {"type": "exit", "schema": 1, "rank": 0, "time": 4.0, "reason": "normal", "exception": None, "steps": 12, "pid": 4242, "hook_cpu_seconds": 0.5},
        {"type": "exit", "schema": 1, "rank": 1, "time": 4.0, "reason": "oom", "exception": "OutOfMemoryError", "steps": 11, "pid": 4243, "hook_cpu_seconds": 0.4},
    ]
    synthetic = root / "20261122-120000-synthetic"
    if not synthetic.exists():
        make_run(root, synthetic.name, steps=12, ranks=2, status="oom", exit_code=1, extra_records=extra, per_step=lambda s, r: {"activations": (6 + s % 3) * GiB})
    out.append(synthetic)
    hooked = root / "20261122-130000-hook-v2"  # run format v2: full records, deltas and the step index
    if not hooked.exists():
        from memtop.profiler import step_index

        chunk = step_index.CHUNK_STEPS
        step_index.CHUNK_STEPS = 8  # a step index for 40 steps, so that the fuzz reaches its reader too
        try:
            write_hook_run(root, 40, name=hooked.name)
        finally:
            step_index.CHUNK_STEPS = chunk
    out.append(hooked)
    return out


def make_case(src: Path, dst: Path, rng: random.Random) -> list[str]:
    """Copy ``src`` to ``dst`` and mutate it; the mutations' names."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    done: list[str] = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        try:
            if rng.random() < 0.25:
                done.append(_mutate_meta(dst / "meta.json", rng))
            else:
                ranks = sorted(dst.glob("rank*.jsonl")) + sorted(dst.glob("rank*.jsonl.idx"))
                if not ranks:
                    continue
                path = rng.choice(ranks)
                data, kind = _mutate_lines(path.read_bytes(), rng)
                path.write_bytes(data)
                done.append(kind)
        except RecursionError:  # the harness's own json on what an earlier mutation nested
            done.append("none")
    return done


@dataclass
class Outcome:
    verb: str
    code: int | None
    stderr: str
    error: str | None = None  # an exception that escaped, or a hang
    seconds: float = 0.0


class _Hang(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang()


def call(argv: list[str]) -> Outcome:
    """``memtop ARGV`` in this process: exit code, stderr, and any exception that escaped."""
    from memtop.cli import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(CALL_LIMIT_S)
    code: int | None = None
    error: str | None = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except _Hang:
        error = f"no answer within {CALL_LIMIT_S} s"
    except BaseException as exc:  # noqa: BLE001 - what the fuzz looks for
        error = "".join(traceback.format_exception(exc))[-3000:]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return Outcome(argv[0], code, err.getvalue(), error, time.perf_counter() - t0)


def problem(o: Outcome) -> str | None:
    """What is wrong with an outcome, or None."""
    if o.error is not None:
        return o.error
    if "Traceback" in o.stderr:
        return o.stderr[-3000:]
    if o.code == 0:
        return None
    if o.code not in (1, 2):
        return f"exit code {o.code}"
    lines = o.stderr.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("memtop: "):
        return f"exit {o.code} with {len(lines)} stderr line(s): {o.stderr[:500]!r}"
    return None


@dataclass
class Tally:
    cases: int = 0
    calls: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    mutations: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    slowest: float = 0.0
    slowest_case: str = ""


def cases(root: Path, n: int, seed: int) -> Iterator[tuple[int, Path, Path, list[str]]]:
    """``(index, source, mutated copy, mutations)`` for ``n`` seeded cases (one copy reused)."""
    rng = random.Random(seed)
    srcs = sources(root / "sources")
    for i in range(n):
        src = srcs[i % len(srcs)]
        dst = root / "case" / src.name
        yield i, src, dst, make_case(src, dst, rng)


def run_cases(root: Path, n: int, seed: int = 0, progress: Callable[[Tally], None] | None = None) -> Tally:
    tally = Tally()
    out_csv = root / "out.csv"
    for i, src, dst, done in cases(root, n, seed):
        tally.cases += 1
        for m in done:
            tally.mutations[m] = tally.mutations.get(m, 0) + 1
        analyze = ["analyze", str(dst), "--json", "--no-flag-detection"] if i % 2 == 0 else ["analyze", str(dst), "--no-flag-detection"]
        for argv in (analyze, ["compare", str(src), str(dst), "--json"], ["export", str(dst), "--csv", str(out_csv)]):
            o = call(argv)
            tally.calls += 1
            if o.seconds > tally.slowest:
                tally.slowest = o.seconds
                tally.slowest_case = f"case {i} ({src.name}; {', '.join(done)}): {argv[0]}"
            key = f"{o.verb} exit {o.code}" if o.error is None else f"{o.verb} error"
            tally.codes[key] = tally.codes.get(key, 0) + 1
            p = problem(o)
            if p is not None:
                tally.problems.append(f"case {i} ({src.name}; {', '.join(done)}): {' '.join(argv[:1])}: {p}")
        if progress is not None:
            progress(tally)
    return tally
