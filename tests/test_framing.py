"""The wire codec: round trips, golden bytes, garbage handling, allocation bounds, framing.

Every test runs against both codec twins, imported directly (the compiled one is skipped, with
a reason, only when it was not built and the pure build is live), and checks that
`raftfast.framing` exposes the twin `raftfast._selection` picked. The differential tests at the
end require the twins to agree byte for byte and error for error.
"""

from __future__ import annotations

import importlib
import struct
import time
import tracemalloc
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftfast import _selection, framing
from raftfast.codec import _format
from raftfast.errors import EncodingError
from raftfast.log import _entries_py
from raftfast.log._entries import EntryBatch
from raftfast.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    PreVote,
    PreVoteReply,
    ReadProbe,
    ReadProbeReply,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftfast.types import EntryKind, LogEntry, Membership, Snapshot

MAX = (1 << 63) - 1


PURE = importlib.import_module("raftfast.codec._codec_py")
try:
    COMPILED: Optional[ModuleType] = importlib.import_module("raftfast.codec._codec_c")
except ImportError:
    if _selection.USE_EXTENSIONS:
        raise  # a compiled build must have the compiled codec: fail loudly, never skip
    COMPILED = None
_NOT_BUILT = "raftfast.codec._codec_c is not built (pure build)"

TWINS = [
    pytest.param(PURE, id="_codec_py"),
    pytest.param(COMPILED, id="_codec_c", marks=pytest.mark.skipif(COMPILED is None, reason=_NOT_BUILT)),
]

# Both EntryBatch twins: the live one (what decode returns) and the pure one, which encode
# must read just as well.
BATCH_TYPES = [EntryBatch] + ([_entries_py.EntryBatch] if _entries_py.EntryBatch is not EntryBatch else [])


# Module scope, so hypothesis tests may use it (a function-scoped fixture is not reset per example).
@pytest.fixture(scope="module", params=TWINS)
def codec(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


def test_framing_exposes_the_selected_twin() -> None:
    expected = "_codec_c" if _selection.USE_EXTENSIONS else "_codec_py"
    for name in ("encode", "decode", "encode_frame", "FrameReader"):
        assert getattr(framing, name).__module__.endswith(expected)
    assert framing.VERSION == 1
    assert framing.MAX_FRAME == _format.MAX_FRAME


# -- strategies --------------------------------------------------------------------------------

ids = st.integers(1, MAX)
u63 = st.integers(0, MAX)
small = st.integers(0, 1000)
num = st.one_of(small, u63)  # mostly small values, as on a real wire, and the extremes
commands = st.binary(max_size=40)


def as_batch(entries: Sequence[LogEntry], prev: int, batch_type: Any = EntryBatch) -> Any:
    """The same entries as an EntryBatch; an empty one after index 2**63-1 starts at MAX, as
    decode gives it (EntryBatch holds an int64)."""
    return batch_type(
        min(prev + 1, MAX),
        [e.term for e in entries],
        bytes(int(e.kind) for e in entries),
        [e.command for e in entries],
    )


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    rows = draw(st.lists(st.tuples(num, st.sampled_from(list(EntryKind)), commands), max_size=8))
    prev = draw(st.one_of(small, st.integers(0, MAX - len(rows))))
    entries: Sequence[LogEntry] = [LogEntry(t, prev + 1 + i, k, c) for i, (t, k, c) in enumerate(rows)]
    # As the node sends them (an EntryBatch from the log) or as any sequence of LogEntry.
    shape = draw(st.sampled_from(["list", "tuple"] + BATCH_TYPES))
    if shape == "tuple":
        entries = tuple(entries)
    elif shape != "list":
        entries = as_batch(entries, prev, shape)
    return AppendEntries(draw(num), draw(ids), prev, draw(num), entries, draw(num))


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    voters = draw(st.sets(st.one_of(st.integers(1, 9), ids), max_size=6))
    learners = draw(st.sets(st.one_of(st.integers(1, 9), ids), max_size=3))
    return Snapshot(draw(num), draw(num), Membership.of(voters, learners), draw(st.binary(max_size=64)))


STRATEGIES: Dict[type, st.SearchStrategy[Message]] = {
    PreVote: st.builds(PreVote, num, ids, num, num),
    PreVoteReply: st.builds(PreVoteReply, num, st.booleans(), ids),
    RequestVote: st.builds(RequestVote, num, ids, num, num, st.booleans()),
    RequestVoteReply: st.builds(RequestVoteReply, num, st.booleans(), ids),
    AppendEntries: append_entries(),
    AppendEntriesReply: st.builds(AppendEntriesReply, num, st.booleans(), ids, num, num, num),
    InstallSnapshot: st.builds(InstallSnapshot, num, ids, snapshots()),
    InstallSnapshotReply: st.builds(InstallSnapshotReply, num, ids, num),
    TimeoutNow: st.builds(TimeoutNow, num, ids),
    ReadProbe: st.builds(ReadProbe, num, ids, num),
    ReadProbeReply: st.builds(ReadProbeReply, num, ids, num),
}
messages = st.one_of(*STRATEGIES.values())

# A fixed corpus, one or more of each type, for the exhaustive truncation and mutation tests.
CORPUS: List[Message] = [
    PreVote(5, 2, 10, 4),
    PreVoteReply(5, True, 3),
    RequestVote(6, 2, 10, 4, True),
    RequestVoteReply(6, False, 1),
    AppendEntries(7, 1, 0, 0, [], 0),
    AppendEntries(
        7, 1, 3, 6,
        [LogEntry(6, 4, EntryKind.NORMAL, b"set x 1"), LogEntry(7, 5, EntryKind.NOOP, b""),
         LogEntry(7, 6, EntryKind.CONFIG, Membership.of([1, 2, 3]).encode())],
        4,
    ),
    AppendEntriesReply(7, False, 2, 3, 2, 5),
    InstallSnapshot(8, 1, Snapshot(100, 7, Membership.of([1, 2, 3], [4]), b"state")),
    InstallSnapshot(8, 1, Snapshot(0, 0, Membership(), b"")),
    InstallSnapshotReply(8, 3, 100),
    TimeoutNow(9, 1),
    ReadProbe(9, 1, 42),
    ReadProbeReply(9, 2, 42),
]


def test_strategies_and_corpus_cover_every_message_type() -> None:
    assert set(STRATEGIES) == set(MESSAGE_TYPES) == set(_format.MESSAGE_CODES)
    assert {type(m) for m in CORPUS} == set(MESSAGE_TYPES)
    assert sorted(_format.MESSAGE_CODES.values()) == list(range(1, len(MESSAGE_TYPES) + 1))


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=60)
@given(data=st.data())
def test_round_trip(codec: ModuleType, cls: type, data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[cls])
    encoded = codec.encode(message)
    assert type(encoded) is bytes
    assert encoded[0] == 1 and encoded[1] == _format.MESSAGE_CODES[cls]
    decoded = codec.decode(encoded)
    assert type(decoded) is cls
    assert decoded == message
    assert codec.encode(decoded) == encoded


def test_decoded_fields_have_exact_types(codec: ModuleType) -> None:
    ae = codec.decode(codec.encode(CORPUS[5]))
    # Entries decode into the live EntryBatch: columns, not one LogEntry per entry.
    assert type(ae.entries) is EntryBatch
    batch = ae.entries
    assert (batch.first_index, batch.terms, batch.kinds) == (4, [6, 7, 7], bytes([0, 2, 1]))
    assert type(batch.terms) is list and all(type(t) is int for t in batch.terms)
    assert type(batch.kinds) is bytes
    assert batch.commands == [e.command for e in CORPUS[5].entries]
    assert all(type(c) is bytes for c in batch.commands)
    assert list(ae.entries) == list(CORPUS[5].entries)
    assert [type(e) for e in ae.entries] == [LogEntry] * 3
    assert [type(e.kind) for e in ae.entries] == [EntryKind] * 3
    assert all(type(e.command) is bytes for e in ae.entries)
    empty = codec.decode(codec.encode(AppendEntries(1, 1, 9, 1, [], 0))).entries
    assert type(empty) is EntryBatch and len(empty) == 0 and empty.first_index == 10
    reply = codec.decode(codec.encode(PreVoteReply(1, True, 2)))
    assert reply.vote_granted is True
    snap = codec.decode(codec.encode(CORPUS[7])).snapshot
    assert type(snap.data) is bytes and snap.config == Membership((1, 2, 3), (4,))


def test_decode_accepts_bytes_like(codec: ModuleType) -> None:
    for message in CORPUS:
        encoded = codec.encode(message)
        assert codec.decode(bytearray(encoded)) == message
        assert codec.decode(memoryview(encoded)) == message
        assert codec.decode(memoryview(b"xx" + encoded + b"yy")[2:-2]) == message


def test_encode_accepts_bytes_like_payloads(codec: ModuleType) -> None:
    ae = AppendEntries(1, 1, 0, 0, [LogEntry(1, 1, EntryKind.NORMAL, bytearray(b"ab"))], 0)
    assert codec.decode(codec.encode(ae)).entries[0].command == b"ab"
    snap = InstallSnapshot(1, 1, Snapshot(1, 1, Membership.of([1]), memoryview(b"cd")))
    assert codec.decode(codec.encode(snap)).snapshot.data == b"cd"
    # Any sequence of entries will do, not just a list.
    entries = CORPUS[5].entries
    ae = AppendEntries(1, 1, 3, 0, tuple(entries), 0)
    assert codec.encode(ae) == codec.encode(AppendEntries(1, 1, 3, 0, list(entries), 0))
    # ... and an EntryBatch (either twin's) gives the same bytes as its entries.
    expected = codec.encode(CORPUS[5])
    for batch_type in BATCH_TYPES:
        batch = as_batch(entries, 3, batch_type)
        assert codec.encode(AppendEntries(7, 1, 3, 6, batch, 4)) == expected
        assert codec.encode(AppendEntries(7, 1, 3, 6, list(batch), 4)) == expected
        assert codec.encode_frame(AppendEntries(7, 1, 3, 6, batch, 4))[4:] == expected
        # A decoded batch re-encodes as it came.
        assert codec.encode(codec.decode(expected)) == expected
        # Bytes-like commands in a batch are accepted, and the batch is left as it was.
        loose = batch_type(4, [6, 7], bytes([0, 2]), [bytearray(b"ab"), memoryview(b"cd")])
        decoded = codec.decode(codec.encode(AppendEntries(7, 1, 3, 6, loose, 4)))
        assert [e.command for e in decoded.entries] == [b"ab", b"cd"]
        assert type(loose.commands[0]) is bytearray
        # An empty batch's first index is not sent.
        assert codec.encode(_ae(batch_type(99, [], b"", []), prev=3)) == codec.encode(_ae([], prev=3))


def test_extremes_round_trip(codec: ModuleType) -> None:
    for message in [
        PreVote(MAX, MAX, MAX, MAX),
        AppendEntries(MAX, MAX, MAX - 1, MAX, [LogEntry(MAX, MAX, EntryKind.NOOP, b"")], MAX),
        AppendEntries(0, 1, MAX, 0, [], 0),
        InstallSnapshot(MAX, 1, Snapshot(MAX, MAX, Membership.of([1, MAX], [MAX - 1]), b"")),
        ReadProbe(0, 1, 0),
    ]:
        assert codec.decode(codec.encode(message)) == message


# -- golden bytes: the version-1 format must not drift ------------------------------------------

GOLDEN = [
    (
        PreVote(5, 2, 10, 4),
        "0101" "0500000000000000" "0200000000000000" "0a00000000000000" "0400000000000000",
    ),
    (RequestVoteReply(6, True, 3), "0104" "0600000000000000" "01" "0300000000000000"),
    (
        AppendEntries(
            3, 1, 5, 2, [LogEntry(2, 6, EntryKind.NORMAL, b"abc"), LogEntry(3, 7, EntryKind.NOOP)], 4
        ),
        "0105" "0300000000000000" "0100000000000000" "0500000000000000" "0200000000000000"
        "0400000000000000" "02000000"
        "0200000000000000" "00" "03000000" "616263"
        "0300000000000000" "02" "00000000",
    ),
    (
        AppendEntriesReply(7, False, 2, 3, 2, 5),
        "0106" "0700000000000000" "00" "0200000000000000" "0300000000000000" "0200000000000000"
        "0500000000000000",
    ),
    (
        InstallSnapshot(4, 2, Snapshot(10, 3, Membership.of([1, 3], [5]), b"st")),
        "0107" "0400000000000000" "0200000000000000" "0a00000000000000" "0300000000000000"
        "02000000" "01000000" "0100000000000000" "0300000000000000" "0500000000000000"
        "02000000" "7374",
    ),
    (ReadProbeReply(9, 2, 42), "010b" "0900000000000000" "0200000000000000" "2a00000000000000"),
]


@pytest.mark.parametrize("message,hex_bytes", GOLDEN, ids=[type(m).__name__ for m, _ in GOLDEN])
def test_golden_bytes(codec: ModuleType, message: Message, hex_bytes: str) -> None:
    assert codec.encode(message).hex() == hex_bytes
    assert codec.decode(bytes.fromhex(hex_bytes)) == message
    framed = codec.encode_frame(message)
    assert framed[:4] == struct.pack("<I", len(hex_bytes) // 2) and framed[4:].hex() == hex_bytes


# -- garbage: EncodingError and nothing else ---------------------------------------------------


def _decode_or_reject(codec: ModuleType, data: bytes) -> None:
    """decode either raises EncodingError or returns the message whose encoding is `data`
    (every accepted input is canonical: there is one encoding per message)."""
    try:
        message = codec.decode(data)
    except EncodingError:
        return
    assert codec.encode(message) == bytes(data)


@settings(max_examples=300)
@given(data=st.binary(max_size=120))
def test_random_bytes(codec: ModuleType, data: bytes) -> None:
    _decode_or_reject(codec, data)


@settings(max_examples=300)
@given(code=st.integers(0, 13), body=st.binary(max_size=120))
def test_random_bodies_behind_a_valid_header(codec: ModuleType, code: int, body: bytes) -> None:
    _decode_or_reject(codec, bytes([1, code]) + body)


def test_every_truncation_and_extension_is_rejected(codec: ModuleType) -> None:
    for message in CORPUS:
        encoded = codec.encode(message)
        for cut in range(len(encoded)):
            with pytest.raises(EncodingError):
                codec.decode(encoded[:cut])
        with pytest.raises(EncodingError, match="trailing|expected|remain"):
            codec.decode(encoded + b"\x00")


def test_every_single_byte_mutation(codec: ModuleType) -> None:
    for message in CORPUS:
        encoded = bytearray(codec.encode(message))
        for position in range(len(encoded)):
            original = encoded[position]
            for value in range(256):
                if value != original:
                    encoded[position] = value
                    _decode_or_reject(codec, encoded)
            encoded[position] = original


@settings(max_examples=100)
@given(message=messages, data=st.data())
def test_mutations_of_random_messages(codec: ModuleType, message: Message, data: st.DataObject) -> None:
    encoded = bytearray(codec.encode(message))
    for _ in range(3):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
        _decode_or_reject(codec, encoded)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(EncodingError):
        codec.decode(codec.encode(message)[:cut])


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "header"),
        (b"\x01", "header"),
        (b"\x00\x01" + bytes(32), "version"),
        (b"\x02\x01" + bytes(32), "version"),
        (b"\x01\x00", "type"),
        (b"\x01\x0c", "type"),
        (b"\x01\xff" + bytes(40), "type"),
    ],
)
def test_bad_headers(codec: ModuleType, data: bytes, match: str) -> None:
    with pytest.raises(EncodingError, match=match):
        codec.decode(data)


def _replace(encoded: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(encoded)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_semantic_checks(codec: ModuleType) -> None:
    pre_vote = codec.encode(PreVote(5, 2, 10, 4))
    reply = codec.encode(RequestVoteReply(6, True, 3))
    ae = codec.encode(CORPUS[5])
    snap = codec.encode(CORPUS[7])
    bad = [
        _replace(pre_vote, 2, "<Q", 1 << 63),  # term above 2**63-1
        _replace(pre_vote, 10, "<Q", 0),  # node id 0
        _replace(reply, 10, "<B", 2),  # a flag that is neither 0 nor 1
        _replace(ae, 46 + 8, "<B", 3),  # unknown entry kind
        _replace(ae, 46, "<Q", 1 << 63),  # entry term above 2**63-1
        _replace(ae, 18, "<Q", MAX - 2),  # prev index + 3 entries runs past 2**63-1
        _replace(snap, 42, "<Q", 2),  # voters 2, 2, 3: not strictly increasing
        _replace(snap, 66, "<Q", 3),  # learner 3 is also a voter
        _replace(snap, 42, "<Q", 0),  # member id 0
    ]
    for data in bad:
        with pytest.raises(EncodingError):
            codec.decode(data)


def test_wrong_input_types(codec: ModuleType) -> None:
    released = memoryview(codec.encode(CORPUS[0]))
    released.release()
    for data in [None, "01", 1, [1, 1], released]:
        with pytest.raises(EncodingError):
            codec.decode(data)


# -- allocation bounds ---------------------------------------------------------------------------


def _fails_fast(codec: ModuleType, data: bytes) -> None:
    tracemalloc.start()
    began = time.perf_counter()
    try:
        with pytest.raises(EncodingError):
            codec.decode(data)
        elapsed = time.perf_counter() - began
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.05, elapsed
    assert peak < 64 * 1024, peak


def test_huge_counts_fail_fast_without_allocating(codec: ModuleType) -> None:
    huge = 0xFFFFFFFF
    head = struct.pack("<BBQQQQQI", 1, 5, 1, 1, 0, 0, 0, huge)
    _fails_fast(codec, head[:20])  # 20 bytes claiming ~2**32 entries
    _fails_fast(codec, head + bytes(4))
    _fails_fast(codec, head + bytes(13 * 1000))  # room for 1000 entries, not 2**32
    # One entry claiming a 4 GiB command.
    one = struct.pack("<BBQQQQQI", 1, 5, 1, 1, 0, 0, 0, 1)
    _fails_fast(codec, one + struct.pack("<QBI", 1, 0, huge))
    snap = struct.pack("<BBQQQQII", 1, 7, 1, 1, 0, 0, huge, huge)
    _fails_fast(codec, snap + bytes(16))
    _fails_fast(codec, struct.pack("<BBQQQQII", 1, 7, 1, 1, 0, 0, 0, 0) + struct.pack("<I", huge))


# -- encode rejects what decode could not give back ----------------------------------------------

_ENTRY = LogEntry(1, 1, EntryKind.NORMAL, b"x")


def _ae(entries: object, prev: int = 0) -> AppendEntries:
    return AppendEntries(1, 1, prev, 0, entries, 0)  # type: ignore[arg-type]


def _snap(config: Membership, data: object = b"") -> InstallSnapshot:
    return InstallSnapshot(1, 1, Snapshot(1, 1, config, data))  # type: ignore[arg-type]


class NotAMessage(PreVote):
    pass


def _skewed(batch: Any) -> Any:
    """A batch whose columns were made to differ in length after construction."""
    batch.terms.append(1)
    return batch


BAD_MESSAGES: List[Callable[[], object]] = [
    lambda: None,
    lambda: object(),
    lambda: b"\x01\x01",
    lambda: NotAMessage(1, 1, 1, 1),
    lambda: PreVote(-1, 1, 0, 0),
    lambda: PreVote(1, 0, 0, 0),
    lambda: PreVote(1, 1 << 63, 0, 0),
    lambda: PreVote(1 << 64, 1, 0, 0),
    lambda: PreVote(1.0, 1, 0, 0),
    lambda: PreVote("1", 1, 0, 0),
    lambda: PreVoteReply(1, 1, 2),
    lambda: RequestVote(1, 1, 0, 0, None),
    lambda: AppendEntriesReply(1, "yes", 2, 0),
    lambda: AppendEntriesReply(1, True, 2, -5),
    lambda: TimeoutNow(1, -1),
    lambda: ReadProbe(1, 1, 1 << 63),
    lambda: ReadProbeReply(1, 0, 1),
    lambda: InstallSnapshotReply(None, 1, 1),
    lambda: _ae([LogEntry(1, 2, EntryKind.NORMAL, b"")]),  # index must be prev + 1
    lambda: _ae([_ENTRY, _ENTRY]),  # indexes must be consecutive
    lambda: _ae([LogEntry(-1, 1, EntryKind.NORMAL, b"")]),
    lambda: _ae([LogEntry(1, 1, 3, b"")]),  # type: ignore[arg-type]
    lambda: _ae([LogEntry(1, 1, -1, b"")]),  # type: ignore[arg-type]
    lambda: _ae([LogEntry(1, 1, EntryKind.NORMAL, "text")]),  # type: ignore[arg-type]
    lambda: _ae([(1, 1, 0, b"")]),
    lambda: _ae(None),
    lambda: _ae([LogEntry(1, MAX + 1, EntryKind.NORMAL, b"")], prev=MAX),
    # The same rules for an EntryBatch, read column by column.
    *[
        make
        for batch_type in BATCH_TYPES
        for make in [
            lambda b=batch_type: _ae(b(2, [1], b"\x00", [b""])),  # first index must be prev + 1
            lambda b=batch_type: _ae(b(1, [-1], b"\x00", [b""])),
            lambda b=batch_type: _ae(b(1, [1 << 63], b"\x00", [b""])),
            lambda b=batch_type: _ae(b(1, [1, 1], b"\x00\x03", [b"", b""])),  # unknown kind
            lambda b=batch_type: _ae(b(1, [1, 1.5], b"\x00\x00", [b"", b""])),
            lambda b=batch_type: _ae(b(1, [1, "1"], b"\x00\x00", [b"", b""])),
            lambda b=batch_type: _ae(b(1, [1], b"\x00", ["text"])),
            lambda b=batch_type: _ae(b(1, [1], b"\x00", [None])),
            lambda b=batch_type: _ae(b(MAX + 1, [1], b"\x00", [b""]), prev=MAX)
            if b is _entries_py.EntryBatch else _ae(b(MAX, [1], b"\x00", [b""]), prev=MAX),
            lambda b=batch_type: _ae(_skewed(b(1, [1, 1], b"\x00\x00", [b"", b""]))),
        ]
    ],
    lambda: _snap(Membership((2, 1))),
    lambda: _snap(Membership((1, 1))),
    lambda: _snap(Membership((1, 2), (2,))),
    lambda: _snap(Membership([1, 2])),  # type: ignore[arg-type]
    lambda: _snap(Membership((0,))),
    lambda: _snap(Membership((1,)), data="text"),
    lambda: InstallSnapshot(1, 1, None),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("make", BAD_MESSAGES)
def test_encode_rejects_bad_values(codec: ModuleType, make: Callable[[], object]) -> None:
    message = make()
    with pytest.raises(EncodingError):
        codec.encode(message)
    with pytest.raises(EncodingError):
        codec.encode_frame(message)


# -- framing -----------------------------------------------------------------------------------


def _stream(codec: ModuleType) -> bytes:
    return b"".join(codec.encode_frame(m) for m in CORPUS)


def test_frames_reassemble_at_every_split(codec: ModuleType) -> None:
    stream = _stream(codec)
    for cut in range(len(stream) + 1):
        reader = codec.FrameReader()
        payloads = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert [codec.decode(p) for p in payloads] == CORPUS
        assert reader.buffered == 0


def test_frames_byte_by_byte(codec: ModuleType) -> None:
    stream = _stream(codec)
    reader = codec.FrameReader()
    payloads: List[bytes] = []
    for i in range(len(stream)):
        payloads += reader.feed(memoryview(stream)[i : i + 1])
        assert reader.buffered == i + 1 - sum(len(p) + 4 for p in payloads)
    assert [codec.decode(p) for p in payloads] == CORPUS
    assert all(type(p) is bytes for p in payloads)


@settings(max_examples=100)
@given(batch=st.lists(messages, max_size=6), data=st.data())
def test_frames_random_chunking(codec: ModuleType, batch: List[Message], data: st.DataObject) -> None:
    stream = b"".join(codec.encode_frame(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = codec.FrameReader()
    payloads: List[bytes] = []
    for lo, hi in zip([0] + cuts, cuts + [len(stream)]):
        payloads += reader.feed(bytearray(stream[lo:hi]))
    assert [codec.decode(p) for p in payloads] == batch


def test_frame_reader_rejects_bad_lengths(codec: ModuleType) -> None:
    for prefix in [0, 1, 101, 0xFFFFFFFF]:
        reader = codec.FrameReader(max_frame=100)
        good = codec.encode_frame(CORPUS[0])
        with pytest.raises(EncodingError, match="length prefix"):
            reader.feed(good + struct.pack("<I", prefix))
        # The stream stays broken: no later byte can be trusted.
        with pytest.raises(EncodingError):
            reader.feed(good)
    # A bad prefix is caught as soon as its four bytes are in, before any payload.
    reader = codec.FrameReader(max_frame=100)
    assert reader.feed(b"\x65\x00\x00") == []
    with pytest.raises(EncodingError):
        reader.feed(b"\x00")


def test_frame_reader_limits(codec: ModuleType) -> None:
    message = AppendEntries(1, 1, 0, 0, [LogEntry(1, 1, EntryKind.NORMAL, bytes(200))], 0)
    payload = codec.encode(message)
    reader = codec.FrameReader(max_frame=len(payload))
    assert reader.max_frame == len(payload)
    assert reader.feed(codec.encode_frame(message)) == [payload]
    with pytest.raises(EncodingError, match="frame limit"):
        codec.encode_frame(message, max_frame=len(payload) - 1)
    assert codec.encode_frame(message, max_frame=len(payload))[4:] == payload
    with pytest.raises(ValueError):
        codec.FrameReader(max_frame=1)


def test_frame_reader_large_frame_in_small_chunks(codec: ModuleType) -> None:
    message = InstallSnapshot(1, 1, Snapshot(1, 1, Membership.of([1]), bytes(range(256)) * 4096))
    stream = codec.encode_frame(message)
    reader = codec.FrameReader()
    payloads: List[bytes] = []
    for i in range(0, len(stream), 997):
        payloads += reader.feed(stream[i : i + 997])
    assert [codec.decode(p) for p in payloads] == [message]


# -- differential: the two twins agree byte for byte and error for error ---------------------------

needs_compiled = pytest.mark.skipif(COMPILED is None, reason=_NOT_BUILT)


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except EncodingError as exc:
        return ("EncodingError", str(exc))


def _same_decode(data: Any) -> None:
    """Both twins accept `data` as the same message or reject it with the same message."""
    assert COMPILED is not None
    pure, compiled = _outcome(lambda: PURE.decode(data)), _outcome(lambda: COMPILED.decode(data))
    assert pure[0] == compiled[0], (data, pure, compiled)
    if pure[0] == "ok":
        assert type(pure[1]) is type(compiled[1]) and pure[1] == compiled[1]
        assert PURE.encode(pure[1]) == COMPILED.encode(compiled[1]) == bytes(data)
    else:
        assert pure[1] == compiled[1], data


@needs_compiled
@settings(max_examples=500)
@given(message=messages, limit=st.integers(2, 200))
def test_twins_encode_identical_bytes(message: Message, limit: int) -> None:
    assert COMPILED is not None
    encoded = PURE.encode(message)
    assert COMPILED.encode(message) == encoded
    assert COMPILED.encode_frame(message) == PURE.encode_frame(message) == struct.pack("<I", len(encoded)) + encoded
    # The same frame limit decision, with the same message.
    assert _outcome(lambda: PURE.encode_frame(message, limit)) == _outcome(
        lambda: COMPILED.encode_frame(message, limit)
    )
    _same_decode(encoded)


@needs_compiled
@settings(max_examples=500)
@given(data=st.one_of(st.binary(max_size=120), st.builds(lambda c, b: bytes([1, c]) + b, st.integers(0, 13), st.binary(max_size=120))))
def test_twins_reject_garbage_alike(data: bytes) -> None:
    _same_decode(data)
    _same_decode(bytearray(data))
    _same_decode(memoryview(b"x" + data)[1:])


@needs_compiled
@settings(max_examples=300)
@given(message=messages, data=st.data())
def test_twins_agree_on_mutated_and_cut_messages(message: Message, data: st.DataObject) -> None:
    encoded = bytearray(PURE.encode(message))
    for _ in range(3):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
        _same_decode(bytes(encoded))
    _same_decode(bytes(encoded[: data.draw(st.integers(0, len(encoded)))]))


@needs_compiled
def test_twins_agree_on_every_single_byte_mutation() -> None:
    for message in CORPUS:
        encoded = bytearray(PURE.encode(message))
        for position in range(len(encoded)):
            original = encoded[position]
            for value in range(256):
                encoded[position] = value
                _same_decode(bytes(encoded))
            encoded[position] = original


@needs_compiled
@pytest.mark.parametrize("make", BAD_MESSAGES)
def test_twins_reject_bad_messages_alike(make: Callable[[], object]) -> None:
    assert COMPILED is not None
    message = make()
    for twin in (PURE, COMPILED):
        with pytest.raises(EncodingError):
            twin.encode(message)
        with pytest.raises(EncodingError):
            twin.encode_frame(message)


@needs_compiled
def test_twins_report_bad_values_alike() -> None:
    """Where the message does not quote a Python exception, the twins' words are the same."""
    assert COMPILED is not None
    for make in BAD_MESSAGES:
        message = make()
        pure, compiled = _outcome(lambda: PURE.encode(message)), _outcome(lambda: COMPILED.encode(message))
        assert pure[0] == compiled[0] == "EncodingError"
        if "must" in pure[1] or "exceeds" in pure[1] or "not a raftfast message" in pure[1]:
            assert pure[1] == compiled[1]


@needs_compiled
@settings(max_examples=200)
@given(
    batch=st.lists(messages, max_size=5),
    junk=st.binary(max_size=12),
    max_frame=st.sampled_from([2, 40, 100, _format.MAX_FRAME]),
    data=st.data(),
)
def test_twins_frame_readers_agree(batch: List[Message], junk: bytes, max_frame: int, data: st.DataObject) -> None:
    """Same payloads, same errors and the same `buffered` after every chunk, garbage included."""
    assert COMPILED is not None
    stream = b"".join(PURE.encode_frame(m) for m in batch) + junk
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    readers = [PURE.FrameReader(max_frame), COMPILED.FrameReader(max_frame)]
    for lo, hi in zip([0] + cuts, cuts + [len(stream)]):
        chunk = stream[lo:hi]
        outcomes = [_outcome(lambda r=r: r.feed(chunk)) for r in readers]
        assert outcomes[0] == outcomes[1]
        assert readers[0].buffered == readers[1].buffered
    assert readers[0].max_frame == readers[1].max_frame == max_frame


@needs_compiled
def test_twins_frame_readers_reject_non_bytes_alike() -> None:
    assert COMPILED is not None
    for data in ["text", 5, None]:
        for twin in (PURE, COMPILED):
            with pytest.raises(TypeError, match="can't concat"):
                twin.FrameReader().feed(data)
