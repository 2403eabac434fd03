"""The load generator's kernel (`raftfast.kv._loadgen`): the pure twin builds the requests the
protocol defines and stamps the open loop's writes with their scheduled times, and the compiled
twin (skipped when not built) gives byte-identical requests and the same stamps put in flight,
parse results, in-flight stamps, latencies and errors as the pure one, on random runs of puts
(random stamp arguments too, bad ones included) and random response streams cut at random
places; and neither reads past a frame whose length lies."""

from __future__ import annotations

import importlib
import math
import struct
from array import array
from collections import OrderedDict
from typing import Dict, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftfast.kv.loadgen import Schedule
from raftfast.kv.protocol import NO_VALUE, RESPONSE, Op, Status, encode_not_leader, encode_request, encode_response

PURE = importlib.import_module("raftfast.kv._loadgen_py")


def _compiled():
    try:
        return importlib.import_module("raftfast.kv._loadgen_c")
    except ModuleNotFoundError as exc:
        if exc.name != "raftfast.kv._loadgen_c":  # built, but something it needs is missing
            raise
        return None


COMPILED = _compiled()
TWINS = [PURE] + ([COMPILED] if COMPILED is not None else [])
twins = pytest.mark.parametrize("twin", TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="raftfast.kv._loadgen_c is not built")

SEQS = 1 << 64
MAX = PURE.MAX_RESPONSE


def _tail(key: bytes, value: bytes) -> bytes:
    """What the generator keeps per key: the end of the request head, the key, the value."""
    return struct.pack("<HII", len(key), len(value), NO_VALUE) + key + value


def _outcome(fn, *args):
    """The result, or the exception's type: what a twin must reproduce."""
    try:
        return fn(*args)
    except (ValueError, TypeError, OverflowError) as exc:
        return type(exc)


keys_st = st.lists(st.binary(max_size=12), min_size=1, max_size=6)
seq_st = st.one_of(st.integers(0, 40), st.integers((1 << 32) - 20, (1 << 32) + 20),
                   st.integers(SEQS - 30, SEQS), st.integers(0, SEQS + 5))


@settings(max_examples=200, deadline=None)
@given(keys_st, st.binary(max_size=20), st.data(), st.integers(0, 25), seq_st, st.integers(0, SEQS - 1),
       st.integers(0, SEQS - 1))
def test_the_pure_twin_encodes_what_the_protocol_defines(keys, value, data, count, first_seq, cid, ack):
    cursor = data.draw(st.integers(0, len(keys) - 1))
    first_seq = min(first_seq, SEQS - count)
    tails = [_tail(k, value) for k in keys]
    out, after = PURE.encode_puts(tails, cursor, cid, first_seq, count, ack)
    expected = b"".join(
        encode_request(Op.PUT, seq & 0xFFFFFFFF, keys[(cursor + i) % len(keys)], value, client_id=cid, seq=seq, ack=ack)
        for i, seq in enumerate(range(first_seq, first_seq + count))
    )
    assert out == expected
    assert after == (cursor + count) % len(keys)


@settings(max_examples=200, deadline=None)
@given(st.floats(1.0, 1e7), st.integers(-(1 << 62), 1 << 62), st.one_of(st.integers(0, 1000), st.integers(0, 1 << 32)),
       st.integers(0, 40), st.integers(1, 1 << 40))
def test_the_pure_twin_puts_writes_in_flight_at_their_scheduled_times(rate, start, first_index, count, first_seq):
    tails = [_tail(b"k%d" % i, b"v") for i in range(3)]
    schedule = Schedule(rate, start)
    inflight = {0: 5}
    out = PURE.encode_puts(tails, 1, 9, first_seq, count, 0, inflight, start, schedule.interval_ns, first_index)
    assert out == PURE.encode_puts(tails, 1, 9, first_seq, count, 0)  # the same requests
    assert inflight == {0: 5, **{first_seq + i: schedule.time_of(first_index + i) for i in range(count)}}
    assert list(inflight) == [0, *range(first_seq, first_seq + count)]  # in seq order, after the ones there


INT64 = 1 << 63


def _mostly(good, *others):
    """Mostly `good` (so that runs do get put in flight), else one of `others`."""
    return st.one_of(good, good, good, st.one_of(*others))


inflight_st = _mostly(st.dictionaries(st.integers(0, 30), st.integers(-5, 5), max_size=4),
                      st.none(), st.sampled_from([[], (), OrderedDict()]))
start_st = _mostly(st.integers(-(1 << 62), 1 << 62), st.integers(-INT64 - 3, -INT64 + 3),
                   st.integers(INT64 - 2000, INT64 + 3), st.sampled_from([1.0, None, "1"]))
interval_st = _mostly(st.one_of(st.floats(0, 1e4), st.floats(0, 1e6)), st.floats(1e17, 1e19), st.floats(),
                      st.integers(-3, 1 << 70), st.integers(1 << 1023, 1 << 1030), st.sampled_from([None, "1.0", 1j]))
first_index_st = _mostly(st.one_of(st.integers(0, 100), st.integers(0, 1 << 32)),
                         st.integers((1 << 53) - 30, (1 << 53) + 5), st.integers(-3, -1), st.sampled_from([2.0, None]))


@needs_compiled
@settings(max_examples=400, deadline=None)
@given(keys_st, st.binary(max_size=20), st.integers(-2, 8), st.integers(-2, 25), seq_st,
       st.one_of(st.integers(0, 9), st.integers(SEQS - 2, SEQS)), st.one_of(seq_st, st.just(-1)))
def test_encode_twins_agree(keys, value, cursor, count, first_seq, cid, ack):
    tails = [_tail(k, value) for k in keys]
    args = (tails, cursor, cid, first_seq, count, ack)
    assert _outcome(COMPILED.encode_puts, *args) == _outcome(PURE.encode_puts, *args)


def _put_in_flight_alike(cursor, count, first_seq, inflight, start, interval, first_index):
    """Both twins: the same result or error, the same stamps put in flight (in the same order),
    and nothing put in flight on an error."""
    tails = [_tail(b"k%d" % i, b"v") for i in range(2)]
    copies = [type(inflight)(inflight) if inflight is not None else None for _ in TWINS]
    outcomes = [_outcome(twin.encode_puts, tails, cursor, 7, first_seq, count, 1, copy, start, interval, first_index)
                for twin, copy in zip(TWINS, copies)]
    assert outcomes[0] == outcomes[1]
    assert copies[0] == copies[1] and (copies[0] is None or list(copies[0]) == list(copies[1]))
    if not isinstance(outcomes[0], tuple):
        assert copies[0] == inflight


@needs_compiled
@settings(max_examples=500, deadline=None)
@given(st.integers(0, 1), st.integers(0, 25), st.integers(0, SEQS - 26), st.dictionaries(st.integers(0, 30),
       st.integers(-5, 5), max_size=4), st.integers(-(1 << 62), 1 << 62),
       st.one_of(st.floats(0, 1e6), st.integers(0, 10 ** 6)), st.integers(0, 1 << 32))
def test_encode_twins_put_the_same_writes_in_flight(cursor, count, first_seq, inflight, start, interval, first_index):
    _put_in_flight_alike(cursor, count, first_seq, inflight, start, interval, first_index)


@needs_compiled
@settings(max_examples=1000, deadline=None)
@given(_mostly(st.integers(0, 1), st.integers(-1, 2)), _mostly(st.integers(0, 25), st.integers(-2, -1)), seq_st,
       inflight_st, start_st, interval_st, first_index_st)
def test_encode_twins_agree_on_any_stamp_arguments(cursor, count, first_seq, inflight, start, interval, first_index):
    """Bad ones too, and stamps at the edges of int64, write indexes at the edge of 2^53."""
    _put_in_flight_alike(cursor, count, first_seq, inflight, start, interval, first_index)


@twins
def test_encode_refuses_bad_arguments(twin):
    tails = [_tail(b"k", b"v")]
    for args in ((tails, 1, 1, 1, 1, 1), ([], 0, 1, 1, 1, 1), (tails, -1, 1, 1, 1, 1), (tails, 0, 1, 1, -1, 1),
                 (tails, 0, SEQS, 1, 1, 1), (tails, 0, 1, SEQS - 1, 2, 1), (tails, 0, 1, -1, 1, 1),
                 (tails, 0, 1, 1, 1, SEQS)):
        with pytest.raises(ValueError):
            twin.encode_puts(*args)
    with pytest.raises(TypeError):
        twin.encode_puts([tails[0], "not bytes"], 0, 1, 1, 2, 1)
    # the same error from both twins where a C conversion could differ: a huge cursor, tails
    # that are a sequence but not a list
    with pytest.raises(ValueError, match="cursor"):
        twin.encode_puts(tails, 1 << 70, 1, 1, 1, 1)
    for other in (tuple(tails), iter(tails)):
        with pytest.raises(TypeError, match="not a list"):
            twin.encode_puts(other, 0, 1, 1, 1, 1)
    assert twin.encode_puts(tails, 0, 1, SEQS, 0, 1) == (b"", 0)  # an empty run may start anywhere


@twins
def test_encode_refuses_bad_stamp_arguments_and_puts_nothing_in_flight(twin):
    tails = [_tail(b"k", b"v")]
    inflight = {7: 1}
    good = dict(inflight=inflight, start=0, interval=1.0, first_index=0)
    for bad, error in ((dict(inflight=[]), TypeError), (dict(inflight=OrderedDict()), TypeError),
                       (dict(start=1.0), TypeError), (dict(start=None), TypeError),
                       (dict(start=INT64), ValueError), (dict(start=-INT64 - 1), ValueError),
                       (dict(interval="1"), TypeError), (dict(interval=None), TypeError),
                       (dict(interval=-1.0), ValueError), (dict(interval=math.nan), ValueError),
                       (dict(interval=math.inf), ValueError), (dict(interval=1 << 1100), OverflowError),
                       (dict(first_index=1.0), TypeError), (dict(first_index=-1), ValueError),
                       (dict(first_index=(1 << 53) - 2), ValueError),  # writes up to 2^53 + 1
                       (dict(start=INT64 - 3, interval=1.5), ValueError),  # the last stamp is 2^63
                       (dict(interval=2.0 ** 62, first_index=0), ValueError)):  # its offset is 2^63
        with pytest.raises(error):
            twin.encode_puts(tails, 0, 1, 1, 3, 1, **{**good, **bad})
        assert inflight == {7: 1}
    # the edges that fit: write indexes up to 2^53 - 1, the last stamp 2^63 - 1, the first -2^63
    twin.encode_puts(tails, 0, 1, 1, 3, 1, inflight, 5, 1.0, (1 << 53) - 3)
    assert inflight == {7: 1, 1: (1 << 53) + 2, 2: (1 << 53) + 3, 3: (1 << 53) + 4}
    inflight = {}
    twin.encode_puts(tails, 0, 1, 1, 3, 1, inflight, INT64 - 3, 1.0, 0)
    assert inflight == {1: INT64 - 3, 2: INT64 - 2, 3: INT64 - 1}
    twin.encode_puts(tails, 0, 1, 4, 1, 1, inflight, -INT64, 0.0, 0)
    assert inflight[4] == -INT64


# A response stream: frames for seqs in flight (or not), in any status, maybe a NOT_LEADER or a
# frame with an impossible length in the middle.
frame_st = st.one_of(
    st.tuples(st.just("seq"), st.integers(0, 40), st.sampled_from([Status.OK, Status.OK, Status.OK, Status.ERROR,
                                                                    Status.CAS_FAILED, Status.NOT_FOUND]),
              st.binary(max_size=6)),
    st.tuples(st.just("rid"), st.integers(0, 0xFFFFFFFF), st.just(Status.OK), st.just(b"")),
    st.tuples(st.just("not_leader"), st.integers(0, 40), st.just(Status.NOT_LEADER), st.sampled_from([b"", b"x"])),
    st.tuples(st.just("length"), st.sampled_from([0, 1, 4, MAX + 1, 0xFFFFFFFF]), st.just(Status.OK), st.just(b"")),
    st.tuples(st.just("garbage"), st.integers(0, 0), st.just(Status.OK), st.binary(max_size=12)),
)


def _stream(frames, seqs: List[int]) -> bytes:
    out = []
    for kind, n, status, body in frames:
        if kind == "seq":  # answers a seq in flight
            rid = (seqs[n % len(seqs)] if seqs else n) & 0xFFFFFFFF
            out.append(encode_response(rid, status, body))
        elif kind == "rid":
            out.append(encode_response(n, status))
        elif kind == "not_leader":
            out.append(encode_not_leader(n, 2, "127.0.0.1:9") if body else encode_response(n, Status.NOT_LEADER))
        elif kind == "length":
            out.append(RESPONSE.pack(n, 1, 0) + b"\0" * 8)
        else:
            out.append(body)
    return b"".join(out)


def _feed(twin, chunks: List[bytes], next_seq: int, inflight: Dict[int, int], now: int,
          window: Tuple[int, int], start: int = 0):
    """What the generator does: parse each arrival after the bytes left over, until a halt."""
    latencies = array("q")
    results = []
    buffer = b"\0" * start
    for chunk in chunks:
        data = buffer + chunk
        result = _outcome(twin.parse_responses, data, start, next_seq, inflight, now, window[0], window[1], latencies)
        results.append(result)
        if not isinstance(result, tuple) or result[3] != twin.MORE:
            break
        buffer = data[result[0]:]
        start = 0
    return results, inflight, latencies.tolist()


def _cuts(data: bytes, points: List[int]) -> List[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


next_seq_st = st.one_of(st.integers(1, 60), st.integers((1 << 32) - 10, (1 << 32) + 30),
                        st.integers(SEQS - 40, SEQS - 1), st.integers(1, SEQS - 1))
window_st = st.one_of(st.just((0, 1 << 63)), st.just((1 << 63, 1 << 63)), st.tuples(st.integers(-50, 150),
                      st.integers(-50, 150)), st.tuples(st.integers(-(1 << 70), 0), st.integers(0, 1 << 70)))


@needs_compiled
@settings(max_examples=500, deadline=None)
@given(next_seq_st, st.lists(st.one_of(st.integers(1, 45), st.sampled_from([(1 << 32) - 1, 1 << 32, (1 << 32) + 1])),
                            max_size=40, unique=True), st.lists(frame_st, max_size=30),
       st.lists(st.integers(0, 1000), max_size=6), st.lists(st.integers(-(1 << 62), 1 << 62), min_size=1),
       window_st, st.integers(0, 12))
def test_parse_twins_agree(next_seq, back, frames, points, stamps, window, start):
    # the seqs in flight: some of the latest below next_seq (crossing a 2^32 boundary when
    # next_seq is just past one), maybe one about 2^32 older whose request id is a recent one's
    seqs = sorted(next_seq - b for b in back if next_seq - b >= 0)
    inflight = {seq: stamps[i % len(stamps)] for i, seq in enumerate(seqs)}
    chunks = _cuts(_stream(frames, seqs), points)
    now = 1 << 61
    expected = _feed(PURE, chunks, next_seq, dict(inflight), now, window, start)
    assert _feed(COMPILED, chunks, next_seq, dict(inflight), now, window, start) == expected


@twins
def test_a_stream_cut_anywhere_parses_as_a_whole(twin):
    """Every split of a stream (OK, unknown ids, errors, a NOT_LEADER, then more) gives the
    same counts, stamps and latencies as the stream in one piece: done, errors, the halt at the
    NOT_LEADER frame, and where it starts."""
    next_seq = (1 << 32) + 3  # seqs 2^32 - 2 .. 2^32 + 2 are in flight: their ids wrap
    seqs = list(range((1 << 32) - 2, next_seq))
    frames = [encode_response(seq & 0xFFFFFFFF, Status.OK) for seq in seqs[:3]]
    frames += [encode_response(0xFFFFFF00, Status.OK), encode_response(seqs[3] & 0xFFFFFFFF, Status.ERROR, b"no")]
    frames += [encode_not_leader(9, 2, "10.0.0.2:7000"), encode_response(seqs[4] & 0xFFFFFFFF, Status.OK)]
    data = b"".join(frames)
    not_leader_at = len(b"".join(frames[:-2]))
    for cut in range(len(data) + 1):
        inflight = {seq: 10 * i for i, seq in enumerate(seqs)}
        results, left, latencies = _feed(twin, [data[:cut], data[cut:]], next_seq, inflight, 100, (0, 1 << 63))
        done = sum(r[1] for r in results)
        errors = sum(r[2] for r in results)
        assert (done, errors, latencies) == (4, 1, [100, 90, 80])
        assert results[-1][3] == twin.NOT_LEADER
        assert sum(r[0] for r in results) == not_leader_at  # each call starts where the last stopped
        assert left == {seqs[4]: 40}


@twins
def test_a_response_answers_the_latest_seq_with_its_request_id(twin):
    """Request ids are seqs mod 2^32: an id answers the latest seq below next_seq that has it,
    across a 2^32 boundary too, and an id that would need a seq below 0 answers nothing."""
    next_seq = (3 << 32) + 5
    inflight = {next_seq - (1 << 32): 1, (3 << 32) - 2: 2, next_seq - 1: 3, (2 << 32) + 4: 4}
    data = b"".join(encode_response(rid, Status.OK) for rid in (5, 0xFFFFFFFE, 4))
    lat = array("q")
    assert twin.parse_responses(data, 0, next_seq, inflight, 10, 0, 100, lat) == (len(data), 3, 0, twin.MORE)
    assert inflight == {(2 << 32) + 4: 4} and lat.tolist() == [9, 8, 7]
    inflight = {5: 1}
    assert twin.parse_responses(encode_response(9, Status.OK), 0, 7, inflight, 10, 0, 100, lat)[1] == 0
    assert inflight == {5: 1}


@twins
def test_bad_responses_are_refused_without_reading_past_them(twin):
    inflight = {1: 5, 2: 6}
    lat = array("q")
    ok = encode_response(1, Status.OK)
    # truncated: a head cut short, a frame cut short: wait for more, consume nothing of it
    for data in (ok[:3], ok[:8], encode_response(2, Status.OK, b"body")[:11]):
        assert twin.parse_responses(data, 0, 3, inflight, 10, 0, 100, lat) == (0, 0, 0, twin.MORE)
    # a length that lies: more than a put's response, or less than the head
    for length in (MAX + 1, 1 << 31, 0xFFFFFFFF, 0, 4):
        bad = RESPONSE.pack(length, 2, 0)
        assert twin.parse_responses(ok + bad, 0, 3, dict(inflight), 10, 0, 100, array("q")) == (len(ok), 1, 0,
                                                                                                 twin.MALFORMED)
    # the largest allowed length: taken as incomplete until it all arrives
    big = RESPONSE.pack(MAX, 2, Status.ERROR) + b"e" * (MAX - 5)
    assert twin.parse_responses(big[:-1], 0, 3, dict(inflight), 10, 0, 100, lat)[3] == twin.MORE
    assert twin.parse_responses(big, 0, 3, dict(inflight), 10, 0, 100, lat) == (len(big), 1, 1, twin.MORE)
    assert not lat  # an error has no latency
    # arguments outside what the generator passes
    with pytest.raises(ValueError):
        twin.parse_responses(ok, len(ok) + 1, 3, inflight, 10, 0, 100, lat)
    with pytest.raises(ValueError):
        twin.parse_responses(ok, -1, 3, inflight, 10, 0, 100, lat)
    for next_seq in (0, SEQS):
        with pytest.raises(ValueError):
            twin.parse_responses(ok, 0, next_seq, inflight, 10, 0, 100, lat)
    with pytest.raises(ValueError, match="pos"):
        twin.parse_responses(ok, 1 << 70, 3, inflight, 10, 0, 100, lat)
    for now in (1 << 63, -(1 << 63) - 1):
        with pytest.raises(ValueError, match="now"):
            twin.parse_responses(ok, 0, 3, inflight, now, 0, 100, lat)
    for latencies in (array("d"), [], None):
        with pytest.raises(TypeError):
            twin.parse_responses(ok, 0, 3, inflight, 10, 0, 100, latencies)
    with pytest.raises(TypeError):
        twin.parse_responses(None, 0, 3, inflight, 10, 0, 100, lat)
    assert inflight == {1: 5, 2: 6} and not lat


@twins
def test_a_latency_outside_int64_is_refused(twin):
    lat = array("q")
    data = encode_response(1, Status.OK) + encode_response(2, Status.OK)
    with pytest.raises(OverflowError):
        twin.parse_responses(data, 0, 3, {1: 0, 2: -(1 << 63)}, (1 << 63) - 1, -(1 << 63), 1 << 63, lat)
    assert lat.tolist() == [(1 << 63) - 1]  # the latencies before it are kept


@twins
def test_many_latencies_in_one_call(twin):
    """More latencies than the compiled twin gathers before appending them."""
    seqs = range(1, 1001)
    inflight = dict.fromkeys(seqs, 7)
    lat = array("q", [1, 2])
    data = b"".join(encode_response(s, Status.OK) for s in seqs)
    assert twin.parse_responses(data, 0, 1001, inflight, 10, 0, 8, lat) == (len(data), 1000, 0, twin.MORE)
    assert lat.tolist() == [1, 2] + [3] * 1000 and not inflight


def test_the_generator_uses_the_selected_twin():
    import raftfast
    from raftfast.kv import _loadgen

    suffix = "_c" if raftfast.IMPLEMENTATION == "cython" else "_py"
    assert _loadgen.parse_responses.__module__ == f"raftfast.kv._loadgen{suffix}"
    assert _loadgen.encode_puts.__module__ == f"raftfast.kv._loadgen{suffix}"
