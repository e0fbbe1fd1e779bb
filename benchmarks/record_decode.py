"""Decoding step records: json + the typed dataclass model (what memtop uses) against msgspec.

The question issue 8 asks: does msgspec (typed decoding with validation in C) earn a dependency?
Times, per record, on step lines in the hook's layout (compact JSON, both moments, 16 large
tensors, as benchmarks/analyze_speed.py writes them):

* ``json.loads`` alone (the floor of a pure-Python reader);
* ``memtop.runs.decode.decode_line`` (json + validation + frozen dataclasses, the shipped path);
* msgspec ``Decoder(type=Union[...Struct])`` with equivalent constraints, if msgspec is installed.

    python benchmarks/record_decode.py [--records 20000]
"""


import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from runfactory import GiB, MiB, step_record  # noqa: E402

from memtop.runs.decode import decode_line  # noqa: E402


def _lines(n: int) -> list[bytes]:
    out = []
    for s in range(1, n + 1):
        rec = step_record(s, activations=6 * GiB + (s % 200) * MiB)
        rec["moments"] = {
            "forward_end": {"allocated": rec["allocated"], **{k: v for k, v in rec["categories"].items() if k != "other"}},
            "optimizer_step": {"allocated": rec["allocated"], "parameters": 2 * GiB, "gradients": 2 * GiB, "optimizer_state": 4 * GiB, "activations": 0},
        }
        for i in range(13):
            rec["large_tensors"].append({"name": f"model.layers.{i}.mlp.weight", "category": "parameters", "bytes": 64 * MiB, "shape": [4096, 4096], "dtype": "torch.float32"})
        out.append(json.dumps(rec, separators=(",", ":")).encode())
    return out


def _msgspec_decoder() -> Any:
    from typing import Annotated

    import msgspec
    from msgspec import Meta, Struct

    Bytes = Annotated[int, Meta(ge=0, le=(1 << 63) - 1)]
    Str = Annotated[str, Meta(max_length=4096)]

    class Cats(Struct, frozen=True):
        parameters: Bytes | None = None
        gradients: Bytes | None = None
        optimizer_state: Bytes | None = None
        activations: Bytes | None = None
        other: Bytes | None = None

    class Moment(Struct, frozen=True):
        allocated: Bytes | None = None
        parameters: Bytes | None = None
        gradients: Bytes | None = None
        optimizer_state: Bytes | None = None
        activations: Bytes | None = None

    class Large(Struct, frozen=True):
        name: Str
        category: Str
        bytes: Bytes
        shape: tuple[Bytes, ...] = ()
        dtype: Str = "unknown"

    class Step(Struct, tag_field="type", tag="step", frozen=True):
        step: Bytes
        schema: int = 1
        rank: Bytes | None = None
        time: float | None = None
        device: Str | None = None
        step_time: Annotated[float, Meta(ge=0)] | None = None
        allocated: Bytes | None = None
        reserved: Bytes | None = None
        peak: Bytes | None = None
        categories: Cats = Cats()
        peak_point: Str | None = None
        activations_step: Bytes | None = None
        tracked: Bytes | None = None
        fragmentation_bytes: Bytes | None = None
        fragmentation_pct: float | None = None
        inactive_split_bytes: Bytes | None = None
        device_used: Bytes | None = None
        device_total: Bytes | None = None
        large_tensors: tuple[Large, ...] = ()
        moments: dict[str, Moment] = {}
        sample_every: Bytes | None = None

    class Exit(Struct, tag_field="type", tag="exit", frozen=True):
        reason: Str | None = None

    return msgspec.json.Decoder(Step | Exit), msgspec


def _time(fn: Any, lines: list[bytes], repeat: int) -> float:
    """Median CPU seconds per line (CPU time: the machine this ran on was shared)."""
    runs = []
    for _ in range(repeat):
        t = time.process_time()
        for line in lines:
            fn(line)
        runs.append(time.process_time() - t)
    return statistics.median(runs) / len(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    lines = _lines(args.records)
    size = sum(map(len, lines)) / len(lines)
    print(f"{len(lines)} step lines, {size:.0f} bytes each")
    base = _time(json.loads, lines, args.repeat)
    ours = _time(decode_line, lines, args.repeat)
    print(f"json.loads only                      {base * 1e6:7.1f} µs/record")
    print(f"memtop decode_line (json+dataclass)  {ours * 1e6:7.1f} µs/record  ({ours / base:.2f}x json.loads)")
    try:
        dec, msgspec = _msgspec_decoder()
    except ImportError:
        print("msgspec not installed: skipped")
        return 0
    got = dec.decode(lines[0])
    assert got.step == 1 and got.categories.parameters == 2 * GiB
    ms = _time(dec.decode, lines, args.repeat)
    print(f"msgspec typed Struct decode          {ms * 1e6:7.1f} µs/record  ({ours / ms:.1f}x faster than memtop's path; msgspec {msgspec.__version__})")
    for n, what in ((600, "analyze (600 decoded records)"), (100_000, "a 100,000-step export")):
        print(f"  {what}: {n * ours * 1e3:.0f} ms vs {n * ms * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
