"""The key-value snapshot reader (`restore_state` in `raftfast.kv._apply_py` / `_apply_c`): a
store of 100,000 keys (64-byte values) and 64 client sessions of 128 results each, read back
from its snapshot, as a node does on start and when it installs a leader's snapshot (inside
the event loop's turn, where the election timeout is 150 ms)."""

from __future__ import annotations

import pytest

from raftfast.kv._apply_py import snapshot_state
from raftfast.kv.protocol import Status

from _twins import twin_module

KEYS = 100_000
SESSIONS = 64
RESULTS = 128


@pytest.fixture(scope="module")
def snapshot() -> bytes:
    data = {b"key-%08d" % i: b"v" * 64 for i in range(KEYS)}
    ok = (int(Status.OK), b"")
    sessions = {cid: [1000, {seq: ok for seq in range(1000, 1000 + RESULTS)}] for cid in range(1, SESSIONS + 1)}
    return snapshot_state(data, sessions)


def test_restore_state(benchmark, twin, snapshot):
    restore_state = twin_module("kv._apply", twin).restore_state
    benchmark.group = f"kv restore_state {KEYS:,} keys + {SESSIONS} sessions x {RESULTS} results"
    benchmark.extra_info["snapshot_bytes"] = len(snapshot)
    data, sessions = benchmark(restore_state, snapshot)
    assert len(data) == KEYS and len(sessions) == SESSIONS
