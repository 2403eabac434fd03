"""The load generator's kernel (`raftfast.kv._loadgen_py` / `_loadgen_c`): encoding one send
of 256 puts (64-byte values, the keys of `raftfast bench`), alone and (the open loop) put in
flight with their scheduled stamps, and reading the 256 OK responses to them, each stamp popped
and its latency recorded."""

from __future__ import annotations

import struct
from array import array

from raftfast.kv.protocol import NO_VALUE, Status, encode_response

from _twins import twin_module

COUNT = 256
VALUE = b"v" * 64
TAILS = [struct.pack("<HII", 12, len(VALUE), NO_VALUE) + b"key-%08d" % i + VALUE for i in range(1000)]
FIRST = 1 << 32  # the request ids wrap within the run: the seq reconstruction's slow case is covered
RESPONSES = b"".join(encode_response(seq & 0xFFFFFFFF, Status.OK) for seq in range(FIRST - 8, FIRST - 8 + COUNT))


def test_encode_puts(benchmark, twin):
    encode_puts = twin_module("kv._loadgen", twin).encode_puts
    benchmark.group = f"loadgen encode_puts {COUNT} puts"
    benchmark.extra_info["writes"] = COUNT
    data, cursor = benchmark(encode_puts, TAILS, 990, 7, FIRST - 8, COUNT, FIRST - 8)
    assert cursor == (990 + COUNT) % len(TAILS) and len(data) == sum(33 + len(TAILS[0]) for _ in range(COUNT))


def test_encode_puts_in_flight(benchmark, twin):
    encode_puts = twin_module("kv._loadgen", twin).encode_puts
    benchmark.group = f"loadgen encode_puts {COUNT} puts, put in flight with scheduled stamps"
    benchmark.extra_info["writes"] = COUNT
    interval = 1e9 / 150_000

    def setup():
        return (TAILS, 990, 7, FIRST - 8, COUNT, FIRST - 8, {}, 10**18, interval, 1 << 30), {}

    data, cursor = benchmark.pedantic(encode_puts, setup=setup, rounds=2000)
    assert cursor == (990 + COUNT) % len(TAILS) and len(data) == sum(33 + len(TAILS[0]) for _ in range(COUNT))


def test_parse_responses(benchmark, twin):
    kernel = twin_module("kv._loadgen", twin)
    benchmark.group = f"loadgen parse_responses {COUNT} OK responses"
    benchmark.extra_info["writes"] = COUNT
    stamps = dict.fromkeys(range(FIRST - 8, FIRST - 8 + COUNT), 1_000)

    def setup():
        return (RESPONSES, 0, FIRST - 8 + COUNT, dict(stamps), 5_000, 0, 1 << 63, array("q")), {}

    result = benchmark.pedantic(kernel.parse_responses, setup=setup, rounds=2000)
    assert result == (len(RESPONSES), COUNT, 0, kernel.MORE)
