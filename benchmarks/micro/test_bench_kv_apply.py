"""The key-value apply kernel (`raftfast.kv._apply_py` / `_apply_c`): applying one batch entry
of 256 puts (64 clients, 64-byte values) to an empty store, as a follower (no replies) and as
the leader (response frames built); and the leader's scan of arriving write frames."""

from __future__ import annotations

import pytest

from raftfast.kv.protocol import BATCH_TAG, Op, encode_request

from _twins import twin_module

BATCH = 256
VALUE = b"v" * 64
FRAMES = b"".join(
    encode_request(Op.PUT, i + 1, b"key-%08d" % i, VALUE, client_id=1 + i % 64, seq=1 + i // 64, ack=1)
    for i in range(BATCH)
)
ENTRY = BATCH_TAG + FRAMES


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_apply_batch(benchmark, twin, role):
    apply_batch = twin_module("kv._apply", twin).apply_batch
    benchmark.group = f"kv apply_batch 256 puts ({role})"
    benchmark.extra_info["entries"] = BATCH

    def run():
        data: dict = {}
        apply_batch(data, {}, 100_000, ENTRY, None, [] if role == "leader" else None)
        return data

    assert len(benchmark(run)) == BATCH


def test_scan_writes(benchmark, twin):
    scan_writes = twin_module("kv._apply", twin).scan_writes
    benchmark.group = "kv scan_writes 256 put frames"
    assert benchmark(scan_writes, FRAMES, 0, 1 << 20) == (len(FRAMES), BATCH)
