"""The snapshot serialiser and reader (`snapshot_state` and `restore_state` in
`raftfast.kv._apply`): every twin that is built writes the same bytes as the original pure
algorithm (kept below as the reference: the format is on disk and on the wire), and anything but
the store's structure is refused with the same exception type by every twin. The twins read
every snapshot back to the same dicts in the same order, and refuse anything else (truncated,
corrupted, or claiming counts and lengths its bytes do not hold: it comes from the leader) with
the same SnapshotFormatError, without allocating for what it claims."""

from __future__ import annotations

import struct
import sys
import tracemalloc
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftfast.kv.protocol import Status
from raftfast.kv.store import KVStore, SnapshotFormatError
from twins import built_twins


TWINS = built_twins("raftfast.kv._apply")
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
    assert _apply.restore_state.__module__ == f"raftfast.kv._apply{suffix}"


# -- restore_state ---------------------------------------------------------------------------

PY = TWINS[0]
both_twins = pytest.mark.skipif(len(TWINS) < 2, reason="raftfast.kv._apply_c is not built")

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1


def raw_snapshot(pairs, sessions, nkeys=None, nsessions=None, lens=None) -> bytes:
    """A snapshot written field by field from `pairs` [(key, value)] and `sessions` [(client id,
    floor, [(seq, status, body)])], duplicates and all; `nkeys`, `nsessions` and `lens` (the
    length table) override what the head and table claim."""
    keys = [k for k, _ in pairs]
    values = [v for _, v in pairs]
    if lens is None:
        lens = [len(k) for k in keys] + [len(v) for v in values]
    parts = [
        struct.pack("<4sBQQ", b"RFKV", 1, len(pairs) if nkeys is None else nkeys,
                    len(sessions) if nsessions is None else nsessions),
        struct.pack(f"<{len(lens)}I", *lens), b"".join(keys), b"".join(values),
    ]
    for cid, floor, results in sessions:
        parts.append(struct.pack("<QQI", cid, floor, len(results)))
        for seq, status, body in results:
            parts.append(struct.pack("<QBI", seq, status, len(body)) + body)
    return b"".join(parts)


def outcome(twin, snapshot: bytes):
    """What `restore_state` made of `snapshot`, down to the types and the order of every dict:
    ("ok", [(key, value)], [(cid, floor, [(seq, status, body)])]) or ("error", message)."""
    try:
        data, sessions = twin.restore_state(snapshot)
    except SnapshotFormatError as exc:
        assert type(exc) is SnapshotFormatError
        return ("error", str(exc))
    assert type(data) is dict and type(sessions) is dict
    for key, value in data.items():
        assert type(key) is bytes and type(value) is bytes
    flat = []
    for cid, session in sessions.items():
        assert type(cid) is int and type(session) is list and len(session) == 2
        floor, results = session
        assert type(floor) is int and type(results) is dict
        for seq, result in results.items():
            assert type(seq) is int and type(result) is tuple and len(result) == 2
            assert type(result[0]) is int and type(result[1]) is bytes
        flat.append((cid, floor, [(seq, status, body) for seq, (status, body) in results.items()]))
    return ("ok", list(data.items()), flat)


def same_outcome(snapshot: bytes):
    """The outcome every twin agrees on (the pure twin's alone when only it is built)."""
    outcomes = [outcome(twin, snapshot) for twin in TWINS]
    assert all(o == outcomes[0] for o in outcomes[1:]), snapshot
    return outcomes[0]


def outcome_of(data, sessions):
    """The `outcome` of a snapshot of `data` and `sessions`."""
    flat = [(cid, floor, [(seq, status, body) for seq, (status, body) in results.items()])
            for cid, (floor, results) in sessions.items()]
    return ("ok", list(data.items()), flat)


@settings(max_examples=300, deadline=None)
@given(data_st, sessions_st)
def test_twins_read_back_what_the_twins_wrote(data, sessions):
    for writer in TWINS:
        assert same_outcome(writer.snapshot_state(data, sessions)) == outcome_of(data, sessions)


pairs_st = st.lists(st.tuples(st.binary(max_size=4), st.binary(max_size=8)), max_size=12)
raw_sessions_st = st.lists(
    st.tuples(st.integers(0, 5), small_or_edge, st.lists(st.tuples(st.integers(0, 5), st.integers(0, 255),
                                                                    st.binary(max_size=6)), max_size=5)),
    max_size=6)


@settings(max_examples=300, deadline=None)
@given(pairs_st, raw_sessions_st)
def test_a_key_client_or_seq_written_twice_keeps_its_first_place_and_its_last_value(pairs, sessions):
    data = {}
    for key, value in pairs:
        data[key] = value
    expected_sessions = {}
    for cid, floor, results in sessions:
        expected_sessions[cid] = [floor, {seq: (status, body) for seq, status, body in results}]
    assert same_outcome(raw_snapshot(pairs, sessions)) == outcome_of(data, expected_sessions)


small_data_st = st.dictionaries(st.binary(max_size=4), st.binary(max_size=8), max_size=6)
small_sessions_st = st.dictionaries(
    small_or_edge, st.builds(lambda f, r: [f, r], small_or_edge,
                             st.dictionaries(small_or_edge, st.tuples(statuses, st.binary(max_size=5)), max_size=3)),
    max_size=3)


@settings(max_examples=60, deadline=None)
@given(small_data_st, small_sessions_st)
def test_every_truncation_is_refused_alike(data, sessions):
    snapshot = PY.snapshot_state(data, sessions)
    for end in range(1, len(snapshot)):  # b"" is the empty store's, to KVStore.restore
        assert same_outcome(snapshot[:end])[0] == "error"
    assert same_outcome(snapshot + b"\0") == ("error", "1 trailing bytes")


@settings(max_examples=300, deadline=None)
@given(small_data_st, small_sessions_st, st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)),
                                                  min_size=1, max_size=4))
def test_flipped_bytes_are_refused_or_read_alike(data, sessions, flips):
    snapshot = bytearray(PY.snapshot_state(data, sessions))
    for where, mask in flips:
        snapshot[where % len(snapshot)] ^= mask
    same_outcome(bytes(snapshot))


def _lying_snapshots():
    """(name, snapshot): heads, tables and lengths claiming far more than the bytes hold."""
    head = lambda nkeys, nsessions, tail=b"": struct.pack("<4sBQQ", b"RFKV", 1, nkeys, nsessions) + tail  # noqa: E731
    one_session = struct.pack("<QQI", 1, 0, 0)
    return [
        ("2^64-1 keys", head(U64_MAX, 0)),
        ("2^64-1 keys with a table", head(U64_MAX, 0, bytes(64))),
        ("2^61 keys (8 x count wraps to 0)", head(1 << 61, 0, bytes(64))),
        ("2^32-1 keys", head(U32_MAX, 0, bytes(4096))),
        ("2^63 keys", head(1 << 63, 1, one_session)),
        ("2^64-1 sessions", head(0, U64_MAX)),
        ("2^64-1 sessions, one there", head(0, U64_MAX, one_session)),
        ("2^32-1 sessions, one there", head(0, U32_MAX, one_session)),
        ("2^64-1 of both", head(U64_MAX, U64_MAX, bytes(1000))),
        ("a key of 2^32-1 bytes", raw_snapshot([(b"k", b"v")], [], lens=[U32_MAX, 1])),
        ("a value of 2^32-1 bytes", raw_snapshot([(b"k", b"v")], [], lens=[1, U32_MAX])),
        ("lengths summing past 2^64", raw_snapshot([(b"", b"")] * 4, [], lens=[U32_MAX] * 8)),
        ("lengths summing past 2^32", raw_snapshot([(b"", b"")] * 2, [], lens=[U32_MAX, 1, 0, 0])),
        ("2^32-1 results", raw_snapshot([], [(1, 0, [])])[:-4] + struct.pack("<I", U32_MAX)),
        ("2^32-1 results, one there", raw_snapshot([], [(1, 0, [(1, 0, b"")])])[:-17]
         + struct.pack("<I", U32_MAX) + struct.pack("<QBI", 1, 0, 0)),
        ("a body of 2^32-1 bytes", raw_snapshot([], [(1, 0, [(1, 0, b"")])])[:-4] + struct.pack("<I", U32_MAX)),
        ("a body past the end by one", raw_snapshot([], [(1, 0, [(1, 0, b"x")])])[:-1]),
    ]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", _lying_snapshots(), ids=lambda c: c[0])
def test_claimed_counts_and_lengths_are_refused_without_allocating_for_them(case):
    _, snapshot = case
    for twin in TWINS:
        tracemalloc.start()
        try:
            with pytest.raises(SnapshotFormatError):
                twin.restore_state(snapshot)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024 + 8 * len(snapshot), f"{twin.__name__} allocated {peak} bytes"
    assert same_outcome(snapshot)[0] == "error"


@pytest.mark.parametrize("snapshot, message", [
    (b"R", "truncated snapshot: unpack_from requires a buffer of at least 21 bytes for unpacking 21 bytes "
           "at offset 0 (actual buffer size is 1)"),
    (b"RFKV\x01" + bytes(15), "truncated snapshot: unpack_from requires a buffer of at least 21 bytes for "
                              "unpacking 21 bytes at offset 0 (actual buffer size is 20)"),
    (b"XFKV\x01" + bytes(16), "not a version 1 KV snapshot"),
    (b"RFKV\x00" + bytes(16), "not a version 1 KV snapshot"),
    (b"RFKV\x02" + bytes(16), "not a version 1 KV snapshot"),
    (b"RFKV\xff" + bytes(16), "not a version 1 KV snapshot"),
    (raw_snapshot([(b"k", b"v")], [])[:24], "truncated key table"),  # cut inside a length
    (raw_snapshot([(b"k", b"v")], [])[:-1], "truncated keys and values"),
    (raw_snapshot([], [(7, 0, [])])[:-1], "truncated snapshot: unpack_from requires a buffer of at least 41 "
                                          "bytes for unpacking 20 bytes at offset 21 (actual buffer size is 40)"),
    (raw_snapshot([], [(7, 0, [(1, 0, b"")])])[:-1], "truncated snapshot: unpack_from requires a buffer of at "
                                                     "least 54 bytes for unpacking 13 bytes at offset 41 "
                                                     "(actual buffer size is 53)"),
    (raw_snapshot([], [(7, 0, [(1, 0, b"ab")])])[:-1], "truncated session result"),
    (raw_snapshot([(b"k", b"v")], [(7, 0, [])]) + b"xyz", "3 trailing bytes"),
    (raw_snapshot([], [], nsessions=0) + struct.pack("<QQI", 1, 0, 0), "20 trailing bytes"),
], ids=repr)
def test_each_refusal_has_one_message_in_every_twin(snapshot, message):
    assert same_outcome(snapshot) == ("error", message)
    with pytest.raises(SnapshotFormatError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        KVStore().restore(snapshot)


@pytest.mark.parametrize("twin", TWINS, ids=ids)
@pytest.mark.parametrize("snapshot", [None, "RFKV", bytearray(raw_snapshot([], [])),
                                      memoryview(raw_snapshot([], [])), 0, [b"RFKV"]], ids=repr)
def test_a_snapshot_that_is_not_bytes_is_a_type_error(twin, snapshot):
    with pytest.raises(TypeError, match=f"^restore: the snapshot must be bytes, not {type(snapshot).__name__}$"):
        twin.restore_state(snapshot)


@pytest.mark.parametrize("twin", TWINS, ids=ids)
def test_empty_is_the_stores_to_decide(twin):
    with pytest.raises(SnapshotFormatError, match="actual buffer size is 0"):
        twin.restore_state(b"")
    store = KVStore()
    store.data[b"k"] = b"v"
    store.sessions[1] = [0, {}]
    store.restore(b"")
    assert store.data == {} and store.sessions == {}
    assert twin.restore_state(raw_snapshot([], [])) == ({}, {})


@both_twins
def test_a_large_store_restores_alike():
    data = {b"key-%08d" % i: bytes([i % 256]) * (i % 97) for i in range(20_000)}
    sessions = {cid: [cid * 3, {cid * 3 + s: (s % 3, b"r" * s) for s in range(64)}] for cid in range(64, 0, -1)}
    snapshot = PY.snapshot_state(data, sessions)
    assert same_outcome(snapshot) == outcome_of(data, sessions)


def test_a_snapshot_format_error_is_a_raft_error_and_a_value_error():
    """Every error raftfast raises on purpose derives from RaftError (raftfast.errors); the
    ValueError base stays for callers that caught it before."""
    from raftfast.errors import RaftError
    from raftfast.kv.store import KVStore

    with pytest.raises(RaftError):
        KVStore().restore(b"RFKV\x01" + b"\xff" * 16)
    assert issubclass(SnapshotFormatError, ValueError)
