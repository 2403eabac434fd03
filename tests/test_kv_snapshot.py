"""The snapshot serialiser (`snapshot_state` in `raftfast.kv._apply`): every twin that is built
writes the same bytes as the original pure algorithm (kept below as the reference: the format
is on disk and on the wire), `KVStore.restore` reads them back, and anything but the store's
structure is refused with the same exception type by every twin."""

from __future__ import annotations

import importlib
import struct
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftfast.kv.protocol import Status
from raftfast.kv.store import KVStore


def _twins():
    found = []
    for suffix in ("_py", "_c"):
        try:
            found.append(importlib.import_module(f"raftfast.kv._apply{suffix}"))
        except ImportError:
            continue
    return found


TWINS = _twins()
ids = lambda m: m.__name__.rsplit(".", 1)[1]  # noqa: E731


def reference_snapshot(data, sessions) -> bytes:
    """`KVStore.snapshot` as it was before the kernels (commit d948483), unchanged."""
    keys = list(data)
    values = list(data.values())
    klens = array("I", map(len, keys))
    vlens = array("I", map(len, values))
    if sys.byteorder == "big":
        klens.byteswap()
        vlens.byteswap()
    parts = [
        struct.pack("<4sBQQ", b"RFKV", 1, len(keys), len(sessions)),
        klens.tobytes(), vlens.tobytes(), b"".join(keys), b"".join(values),
    ]
    for cid, (floor, results) in sessions.items():
        parts.append(struct.pack("<QQI", cid, floor, len(results)))
        for seq, (status, body) in results.items():
            parts.append(struct.pack("<QBI", seq, status, len(body)))
            parts.append(body)
    return b"".join(parts)


u64 = st.integers(0, (1 << 64) - 1)
small_or_edge = st.one_of(st.integers(0, 20), st.sampled_from([0, 1 << 32, (1 << 63) - 1, (1 << 64) - 1]))
statuses = st.one_of(st.integers(0, 255), st.sampled_from(list(Status)))
results_st = st.dictionaries(small_or_edge, st.tuples(statuses, st.binary(max_size=20)), max_size=6)
sessions_st = st.dictionaries(st.one_of(small_or_edge, u64), st.builds(lambda f, r: [f, r], small_or_edge, results_st),
                              max_size=8)
data_st = st.dictionaries(st.binary(max_size=12), st.one_of(st.binary(max_size=40), st.just(b"")), max_size=40)


@pytest.mark.parametrize("twin", TWINS, ids=ids)
@settings(max_examples=400, deadline=None)
@given(data_st, sessions_st)
def test_twins_write_the_reference_bytes_and_restore_reads_them(twin, data, sessions):
    expected = reference_snapshot(data, sessions)
    assert twin.snapshot_state(data, sessions) == expected
    store = KVStore()
    store.data, store.sessions = data, sessions
    assert store.snapshot() == expected  # the selected twin
    back = KVStore()
    back.restore(expected)
    assert back.digest() == store.digest()
    assert back.data == data and list(back.data) == list(data)  # insertion order kept
    assert back.sessions == sessions and list(back.sessions) == list(sessions)


@pytest.mark.parametrize("twin", TWINS, ids=ids)
def test_edge_stores(twin):
    big = bytes(range(256)) * 4096  # 1 MiB
    cases = [
        ({}, {}),
        ({b"": b""}, {}),
        ({b"": big, b"k" * 70_000: b"", b"x": big[:65537]}, {}),
        ({}, {1: [0, {}]}),  # a session without results
        ({b"a": b"1"}, {cid: [cid, {s: (s % 256, bytes(s % 5)) for s in range(cid % 7)}] for cid in range(300)}),
        ({b"a": b"1"}, {5: [3, {3: (Status.OK, b""), 4: (Status.ERROR, big)}]}),
    ]
    for data, sessions in cases:
        expected = reference_snapshot(data, sessions)
        assert twin.snapshot_state(data, sessions) == expected
        back = KVStore()
        back.restore(expected)
        assert (back.data, back.sessions) == (data, sessions)


@pytest.mark.parametrize("twin", TWINS, ids=ids)
def test_a_store_filled_by_the_apply_kernel(twin):
    from raftfast.kv.protocol import BATCH_TAG, Op, encode_request

    data, sessions = {}, {}
    frames = [encode_request(Op.PUT, i, b"key-%d" % (i % 50), bytes(i % 9), client_id=1 + i % 7, seq=i, ack=i // 2)
              for i in range(400)]
    frames.append(encode_request(Op.PUT, 1, b"k", b"v", client_id=9, seq=1, ack=5))  # stale
    twin.apply_batch(data, sessions, 5, BATCH_TAG + b"".join(frames), None)
    assert twin.snapshot_state(data, sessions) == reference_snapshot(data, sessions)


def _bad_inputs():
    ok_session = [1, {1: (0, b"")}]
    return [
        ("data not a dict", [(b"k", b"v")], {}, TypeError),
        ("sessions not a dict", {}, [(1, ok_session)], TypeError),
        ("data None", None, {}, TypeError),
        ("str key", {b"a": b"1", "b": b"2"}, {}, TypeError),
        ("int key", {1: b"2"}, {}, TypeError),
        ("str value", {b"a": b"1", b"b": "2"}, {}, TypeError),
        ("bytearray value", {b"a": bytearray(b"1")}, {}, TypeError),
        ("memoryview value", {b"a": memoryview(b"1")}, {}, TypeError),
        ("None value", {b"a": None}, {}, TypeError),
        ("bad value then bad key", {b"a": "x", 2: b"y"}, {}, TypeError),
        ("bad key and bad session", {3: b"y"}, {-1: ok_session}, TypeError),
        ("str client id", {}, {"c": ok_session}, TypeError),
        ("negative client id", {}, {-1: ok_session}, ValueError),
        ("client id too large", {}, {1 << 64: ok_session}, ValueError),
        ("session a tuple", {}, {1: (1, {})}, TypeError),
        ("session too short", {}, {1: [1]}, ValueError),
        ("session too long", {}, {1: [1, {}, 3]}, ValueError),
        ("float floor", {}, {1: [1.0, {}]}, TypeError),
        ("negative floor", {}, {1: [-1, {}]}, ValueError),
        ("results a list", {}, {1: [0, [(1, (0, b""))]]}, TypeError),
        ("str seq", {}, {1: [0, {"1": (0, b"")}]}, TypeError),
        ("seq too large", {}, {1: [0, {1 << 64: (0, b"")}]}, ValueError),
        ("result a list", {}, {1: [0, {1: [0, b""]}]}, TypeError),
        ("result too short", {}, {1: [0, {1: (0,)}]}, ValueError),
        ("result too long", {}, {1: [0, {1: (0, b"", 1)}]}, ValueError),
        ("status None", {}, {1: [0, {1: (None, b"")}]}, TypeError),
        ("status 256", {}, {1: [0, {1: (256, b"")}]}, ValueError),
        ("status negative", {}, {1: [0, {1: (-1, b"")}]}, ValueError),
        ("str body", {}, {1: [0, {1: (0, "")}]}, TypeError),
        ("bytearray body", {}, {1: [0, {1: (0, bytearray())}]}, TypeError),
        ("good then bad session", {b"k": b"v"}, {1: ok_session, 2: [0, {1: (0, b""), 2: (300, b"")}]}, ValueError),
        ("bad type after bad range", {}, {1: [0, {1: (300, b"")}], 2: "x"}, ValueError),
    ]


@pytest.mark.parametrize("twin", TWINS, ids=ids)
@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_anything_but_the_store_structure_is_refused(twin, case):
    _, data, sessions, error = case
    with pytest.raises(error) as raised:
        twin.snapshot_state(data, sessions)
    assert type(raised.value) is error


def test_the_store_uses_the_selected_twin():
    import raftfast
    from raftfast.kv import _apply

    suffix = "_c" if raftfast.IMPLEMENTATION == "cython" else "_py"
    assert _apply.snapshot_state.__module__ == f"raftfast.kv._apply{suffix}"
