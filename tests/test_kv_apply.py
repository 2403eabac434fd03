"""The key-value apply kernel (`raftfast.kv._apply`): every twin that is built gives the same
store, sessions, replies and response frames as the pure one, on random batches of puts,
deletes, appends and compare-and-sets with retries, stale requests, acknowledgements that jump,
and session eviction."""

from __future__ import annotations

import copy
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftfast.kv.protocol import BATCH_TAG, NO_VALUE, RESPONSE, Op, encode_request
from twins import built_twins


TWINS = built_twins("raftfast.kv._apply")
PURE = TWINS[0]

requests = st.tuples(
    st.sampled_from([Op.PUT, Op.PUT, Op.PUT, Op.DELETE, Op.APPEND, Op.CAS]),
    st.integers(1, 4),  # client id
    st.integers(0, 12),  # seq
    st.integers(0, 14),  # ack
    st.sampled_from([b"a", b"b", b"key", b""]),  # key
    st.binary(max_size=6),  # value
    st.one_of(st.none(), st.sampled_from([b"", b"x", b"v1"])),  # cas expected (None: absent)
    st.integers(0, 0xFFFFFFFF),  # request id
)


def _batch(reqs):
    frames = []
    for op, cid, seq, ack, key, value, expected, rid in reqs:
        frames.append(encode_request(op, rid, key, value, expected if op == Op.CAS else None,
                                     client_id=cid, seq=seq, ack=ack))
    return BATCH_TAG + b"".join(frames)


def _run(twin, batches, max_sessions):
    data, sessions = {}, {}
    replies, frames = [], []
    for i, batch in enumerate(batches):
        if i % 2:
            twin.apply_batch(data, sessions, max_sessions, batch, replies)
        else:
            twin.apply_batch(data, sessions, max_sessions, batch, None, frames)
    return data, [(cid, list(s[0:1]), dict(s[1])) for cid, s in sessions.items()], replies, frames


@pytest.mark.parametrize("twin", TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(requests, max_size=12), max_size=6), st.integers(1, 5))
def test_twins_agree(twin, batches, max_sessions):
    encoded = [_batch(b) for b in batches]
    expected = _run(PURE, encoded, max_sessions)
    got = _run(twin, encoded, max_sessions)
    assert got == expected


@pytest.mark.parametrize("twin", TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_semantics(twin):
    data, sessions = {}, {}
    frames = []
    reqs = [
        (Op.PUT, 1, 1, 1, b"k", b"v", None, 7),
        (Op.PUT, 1, 1, 1, b"k", b"other", None, 8),  # a retry: the remembered result, no change
        (Op.CAS, 1, 2, 1, b"k", b"w", b"v", 9),
        (Op.CAS, 1, 3, 1, b"k", b"z", b"v", 10),  # fails: k is w now
        (Op.CAS, 2, 1, 1, b"new", b"n", None, 11),  # absent expected
        (Op.APPEND, 2, 2, 1, b"new", b"+", None, 12),
        (Op.DELETE, 2, 3, 3, b"k", b"", None, 13),
        (Op.PUT, 2, 1, 3, b"k", b"late", None, 14),  # below the acknowledged floor: stale
    ]
    twin.apply_batch(data, sessions, 100, _batch(reqs), None, frames)
    assert data == {b"new": b"n+"}
    statuses = [RESPONSE.unpack_from(f)[1:] for f in frames]
    assert statuses == [(7, 0), (8, 0), (9, 0), (10, 2), (11, 0), (12, 0), (13, 0), (14, 4)]
    assert frames[-1].endswith(b"stale sequence number: the client already acknowledged its reply")
    assert list(sessions) == [1, 2] and sessions[2][0] == 3 and sorted(sessions[2][1]) == [3]
    twin.apply_batch(data, sessions, 100, b"", None, frames)  # not a batch: nothing happens
    twin.apply_batch(data, sessions, 100, b"\x02junk", None, frames)
    assert len(frames) == 8


@pytest.mark.parametrize("twin", TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_a_truncated_batch_raises_struct_error(twin):
    batch = _batch([(Op.PUT, 1, 1, 0, b"k", b"v", None, 1)])
    with pytest.raises(struct.error):
        twin.apply_batch({}, {}, 10, batch[:20], None)


def test_the_store_uses_the_selected_twin():
    import raftfast
    from raftfast.kv import _apply

    suffix = "_c" if raftfast.IMPLEMENTATION == "cython" else "_py"
    assert _apply.apply_batch.__module__ == f"raftfast.kv._apply{suffix}"


frames_st = st.one_of(
    st.builds(lambda r: encode_request(r[0], r[7], r[4], r[5], r[6] if r[0] == Op.CAS else None,
                                       client_id=r[1], seq=r[2], ack=r[3]), requests),
    st.builds(lambda k: encode_request(Op.GET, 1, k), st.binary(max_size=4)),
    st.builds(lambda cid: encode_request(Op.PUT, 1, b"k", b"v", client_id=cid), st.just(0)),
    st.binary(max_size=50),  # garbage
)


@pytest.mark.parametrize("twin", TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@settings(max_examples=300, deadline=None)
@given(st.lists(frames_st, max_size=8), st.integers(0, 60), st.integers(0, 400))
def test_scan_writes_twins_agree(twin, frames, start, max_request):
    data = b"".join(frames)
    assert twin.scan_writes(data, start, max_request) == PURE.scan_writes(data, start, max_request)


@pytest.mark.parametrize("twin", TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_scan_writes_stops_at_anything_but_a_complete_valid_write(twin):
    w = encode_request(Op.PUT, 1, b"k", b"v", client_id=5, seq=1)
    get = encode_request(Op.GET, 2, b"k")
    assert twin.scan_writes(w + w + get + w, 0, 1 << 20) == (2 * len(w), 2)
    assert twin.scan_writes(w + w[:-1], 0, 1 << 20) == (len(w), 1)  # the second is incomplete
    assert twin.scan_writes(w, 0, 10) == (0, 0)  # over the request limit
    zero = encode_request(Op.PUT, 1, b"k", b"v", client_id=0, seq=1)
    assert twin.scan_writes(zero + w, 0, 1 << 20) == (0, 0)
    assert twin.scan_writes(get + w, len(get), 1 << 20) == (len(get) + len(w), 1)


@pytest.mark.parametrize("twin", TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(requests, max_size=6), max_size=3), st.lists(st.integers(0, 5), max_size=5))
def test_apply_runs_is_apply_batch_with_the_frames_joined_per_run(twin, reqs, counts):
    """The same store and sessions as apply_batch; the responses cut by `counts`, any left
    over unanswered, and a count the batch does not fill gets what is left (b"" for none)."""
    data, sessions, joined = {}, {}, []
    for batch in map(_batch, reqs):
        joined.append(twin.apply_runs(data, sessions, 3, batch, counts))
    ref_data, ref_sessions, frames_per_batch = {}, {}, []
    for batch in map(_batch, reqs):
        frames: list = []
        PURE.apply_batch(ref_data, ref_sessions, 3, batch, None, frames)
        frames_per_batch.append(frames)
    assert (data, sessions) == (ref_data, ref_sessions)
    for frames, runs in zip(frames_per_batch, joined):
        assert len(runs) == len(counts)
        start = 0
        for count, run in zip(counts, runs):
            assert run == b"".join(frames[start : start + count])
            start += count


@pytest.mark.parametrize("twin", TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_apply_runs_refuses_a_bad_count_before_applying_anything(twin):
    batch = _batch([(Op.PUT, 1, 1, 0, b"k", b"v", None, 7)])
    data: dict = {}
    for counts in ([1, -1], [1 << 63], [-(1 << 70)]):
        with pytest.raises(ValueError, match="bad count"):
            twin.apply_runs(data, {}, 10, batch, counts)
    assert data == {}
    assert twin.apply_runs(data, {}, 10, batch, []) == [] and data == {b"k": b"v"}
    assert twin.apply_runs({}, {}, 10, b"\x02junk", [2]) == [b""]  # not a batch: nothing applied
    with pytest.raises(struct.error):
        twin.apply_runs({}, {}, 10, batch[:20], [1])
