"""Codec throughput, both twins in one process: encode + decode of an AppendEntries carrying
256 x 64-byte entries, in MB/s of encoded message bytes (MB = 10**6).

    python -m benchmarks.codec_bench [--seconds S] [--quick]

One operation is `decode(encode(message))`; the rate is len(encode(message)) bytes per
operation over the time per operation, the best of several timed slices (noise only slows).
The headline uses wall-clock time, as `benchmarks.core` does; each figure is repeated with
process CPU time, which other processes on a shared machine disturb far less (a wall figure
well below its CPU figure means the machine was busy, not that the codec was slow). The message
carries an EntryBatch, as a leader sends what its log hands it, and decode gives
one back. Both twins build the live EntryBatch (raftfast.log._entries): in a compiled build the
pure codec decodes into the compiled batch, so its figure is a little better than a fully pure
build's (`python -m benchmarks.core` runs each build in its own process).

`codec_mb_per_s(codec_module, seconds)` is the measuring function for other harnesses.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional

BATCH = 256
COMMAND_SIZE = 64
TARGET_MB_PER_S = 500


def append_entries(batch: int = BATCH, size: int = COMMAND_SIZE, as_batch: bool = True) -> Any:
    """AppendEntries(term 7, leader 1, after index 1000) with `batch` entries of `size` random
    bytes: an EntryBatch (the live twin), or a list of LogEntry when `as_batch` is false."""
    from raftfast.log._entries import EntryBatch
    from raftfast.messages import AppendEntries
    from raftfast.types import EntryKind, LogEntry

    commands = [os.urandom(size) for _ in range(batch)]
    if as_batch:
        entries: Any = EntryBatch(1001, [7] * batch, bytes(batch), commands)
    else:
        entries = [LogEntry(7, 1001 + i, EntryKind.NORMAL, c) for i, c in enumerate(commands)]
    return AppendEntries(7, 1, 1000, 7, entries, 990)


def _best_rate(
    run: Callable[[], int], seconds: float, repeats: int = 5, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Best units/s over `repeats` timed slices of about `seconds` each, timed by `clock`."""
    run()  # warm up
    best = 0.0
    for _ in range(repeats):
        units = 0
        start = clock()
        deadline = start + seconds
        while True:
            units += run()
            now = clock()
            if now >= deadline:
                break
        best = max(best, units / (now - start))
    return best


def codec_rates(
    codec: ModuleType, seconds: float = 0.4, message: Any = None, clock: Callable[[], float] = time.perf_counter
) -> Dict[str, float]:
    """MB/s (of encoded bytes) for encode + decode, encode alone and decode alone, with the
    codec twin `codec` (a module exporting encode and decode), timed by `clock`."""
    message = append_entries() if message is None else message
    encode, decode = codec.encode, codec.decode
    payload = encode(message)
    size = len(payload)
    if decode(payload) != message or encode(decode(payload)) != payload:
        raise AssertionError(f"{codec.__name__} does not round-trip the benchmark message")

    def both() -> int:
        decode(encode(message))
        return size

    def encode_only() -> int:
        encode(message)
        return size

    def decode_only() -> int:
        decode(payload)
        return size

    return {
        "encode_decode": _best_rate(both, seconds, clock=clock) / 1e6,
        "encode": _best_rate(encode_only, seconds, clock=clock) / 1e6,
        "decode": _best_rate(decode_only, seconds, clock=clock) / 1e6,
        "message_bytes": float(size),
    }


def codec_mb_per_s(codec: ModuleType, seconds: float = 0.4, clock: Callable[[], float] = time.perf_counter) -> float:
    """Encode + decode of the 256 x 64-byte AppendEntries with `codec`, MB/s."""
    return codec_rates(codec, seconds, clock=clock)["encode_decode"]


def _twin(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(f"raftfast.codec.{name}")
    except ImportError:
        return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.codec_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.4, help="length of each timed slice")
    parser.add_argument("--quick", action="store_true", help="short slices (a smoke run)")
    args = parser.parse_args(argv)
    seconds = 0.05 if args.quick else args.seconds
    if seconds <= 0:
        parser.error("--seconds must be positive")

    import raftfast
    from raftfast.log._entries import EntryBatch

    pure, compiled = _twin("_codec_py"), _twin("_codec_c")
    assert pure is not None
    message = append_entries()
    listed = append_entries(as_batch=False)
    print(
        f"AppendEntries, {BATCH} x {COMMAND_SIZE}-byte entries: {len(pure.encode(message))} bytes encoded; "
        f"live build {raftfast.IMPLEMENTATION}, EntryBatch from {EntryBatch.__module__}; "
        f"best of 5 slices of {seconds}s; MB = 10**6 bytes"
    )
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for label, twin in (("pure (_codec_py)", pure), ("compiled (_codec_c)", compiled)):
        if twin is None:
            print(f"{label:20} not built (cythonize -i -3 raftfast/codec/_codec_c.pyx)")
            continue
        results[label] = {}
        for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
            rates = codec_rates(twin, seconds, message, clock)
            rates["encode_list"] = codec_rates(twin, seconds, listed, clock)["encode"]
            results[label][clock_name] = rates
            print(
                f"{label:20} {clock_name:4} encode+decode {rates['encode_decode']:8,.1f} MB/s  "
                f"(encode {rates['encode']:8,.1f}, decode {rates['decode']:8,.1f}, "
                f"encode from a LogEntry list {rates['encode_list']:8,.1f})"
            )
    if len(results) == 2:
        p, c = results["pure (_codec_py)"], results["compiled (_codec_c)"]
        for clock_name in ("wall", "cpu"):
            pc, cc = p[clock_name], c[clock_name]
            ratio = cc["encode_decode"] / pc["encode_decode"]
            met = "met" if cc["encode_decode"] >= TARGET_MB_PER_S else "MISSED"
            print(
                f"compiled/pure ({clock_name}): encode+decode {ratio:.1f}x (encode "
                f"{cc['encode'] / pc['encode']:.1f}x, decode {cc['decode'] / pc['decode']:.1f}x); "
                f"compiled {cc['encode_decode']:,.0f} MB/s vs target {TARGET_MB_PER_S}: {met}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
