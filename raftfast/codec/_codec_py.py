"""Pure-Python codec kernel: peer messages <-> bytes, and the length-prefixed frame reader.

The layout is docs/wire-format.md. `decode` trusts nothing: every count and length is checked
against the bytes still unread before anything is built from it, so garbage costs at most its
own size and raises only EncodingError. `encode` accepts exactly what `decode` can give back.
AppendEntries entries decode into the live `EntryBatch` (columns, not one LogEntry each), and
`encode` reads an EntryBatch's columns directly while accepting any sequence of LogEntry.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Tuple, Type, Union

from ..errors import EncodingError
from ..messages import (
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
from ..log import _entries_py
from ..log._entries import EntryBatch
from ..types import EntryKind, Membership, Snapshot
from ._format import MAX_FRAME, MAX_VALUE, MESSAGE_CODES, MIN_FRAME, VERSION

__all__ = ["FrameReader", "decode", "encode", "encode_frame"]

Buffer = Union[bytes, bytearray, memoryview]

# `x >> _BITS` is non-zero exactly when x is negative or above MAX_VALUE, so one test covers
# every integer field of a message at once: `(a | b | c) >> _BITS`.
_BITS = MAX_VALUE.bit_length()

_KINDS = (EntryKind.NORMAL, EntryKind.CONFIG, EntryKind.NOOP)
_MAX_KIND = len(_KINDS) - 1

# Entry batches whose columns `encode` reads directly: the live twin's (what `decode` returns
# and the log hands out) and the pure one's, which any build can construct. Anything else is
# taken as a sequence of LogEntry.
_BATCH_TYPES = frozenset({EntryBatch, _entries_py.EntryBatch})

# Fixed-size messages are one struct each: version, type, then the fields in declaration order
# (u64 for terms, indexes, node ids and sequence numbers; u8 for flags).
_PRE_VOTE = struct.Struct("<BBQQQQ")  # term, candidate, last_log_index, last_log_term
_REQUEST_VOTE = struct.Struct("<BBQQQQB")  # ... as PreVote, then force
_VOTE_REPLY = struct.Struct("<BBQBQ")  # term, vote_granted, from_
_APPEND_REPLY = struct.Struct("<BBQBQQQQ")  # term, success, from_, match, conflict index/term
_TRIPLE = struct.Struct("<BBQQQ")  # term, node id, value: InstallSnapshotReply, ReadProbe(Reply)
_TIMEOUT_NOW = struct.Struct("<BBQQ")  # term, leader
# Variable-size messages: a fixed head, then counted items.
_APPEND_HEAD = struct.Struct("<BBQQQQQI")  # term, leader, prev index/term, leader_commit, count
_ENTRY_HEAD = struct.Struct("<QBI")  # term, kind, command length; the index is implicit
_SNAPSHOT_HEAD = struct.Struct("<BBQQQQII")  # term, leader, index, term, #voters, #learners
_ID_SIZE = 8
_LENGTH = struct.Struct("<I")


def _as_bytes(value: Any, field: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{field} must be bytes, got {type(value).__name__}")


def _members_ok(voters: Tuple[int, ...], learners: Tuple[int, ...]) -> bool:
    """Membership's canonical form: ids in 1..MAX_VALUE, each tuple strictly increasing, disjoint."""
    for ids in (voters, learners):
        previous = 0
        for node in ids:
            if not previous < node <= MAX_VALUE:
                return False
            previous = node
    return set(voters).isdisjoint(learners)


# -- encoders: (message, type code) -> parts to join ------------------------------------------


def _out_of_range(message: Message, fields: str = "") -> EncodingError:
    # `fields` stands in for the repr of messages that carry payloads, which may be huge.
    return EncodingError(
        f"encode {type(message).__name__}",
        "terms, indexes and sequence numbers must be in 0..2**63-1, node ids in 1..2**63-1, "
        f"flags bool: {fields or repr(message)}",
    )


def _enc_pre_vote(m: PreVote, code: int) -> List[bytes]:
    term, candidate, index, last_term = m.term, m.candidate, m.last_log_index, m.last_log_term
    if (term | candidate | index | last_term) >> _BITS or not candidate:
        raise _out_of_range(m)
    return [_PRE_VOTE.pack(VERSION, code, term, candidate, index, last_term)]


def _enc_request_vote(m: RequestVote, code: int) -> List[bytes]:
    term, candidate, index, last_term = m.term, m.candidate, m.last_log_index, m.last_log_term
    if (term | candidate | index | last_term) >> _BITS or not candidate or type(m.force) is not bool:
        raise _out_of_range(m)
    return [_REQUEST_VOTE.pack(VERSION, code, term, candidate, index, last_term, m.force)]


def _enc_vote_reply(m: Union[PreVoteReply, RequestVoteReply], code: int) -> List[bytes]:
    term, sender = m.term, m.from_
    if (term | sender) >> _BITS or not sender or type(m.vote_granted) is not bool:
        raise _out_of_range(m)
    return [_VOTE_REPLY.pack(VERSION, code, term, m.vote_granted, sender)]


def _bad_entry(position: int, index: int, got_index: Any, term: Any, kind: Any) -> EncodingError:
    return EncodingError(
        "encode AppendEntries",
        f"entry {position} must have index {index}, a term in 0..2**63-1 and an "
        f"EntryKind; got index={got_index!r} term={term!r} kind={kind!r}",
    )


def _enc_append(m: AppendEntries, code: int) -> List[bytes]:
    term, leader, prev, prev_term, commit = (
        m.term, m.leader, m.prev_log_index, m.prev_log_term, m.leader_commit
    )
    if (term | leader | prev | prev_term | commit) >> _BITS or not leader:
        raise _out_of_range(
            m, f"term={term!r} leader={leader!r} prev_log_index={prev!r} prev_log_term={prev_term!r} "
            f"leader_commit={commit!r}"
        )
    entries = m.entries
    parts: List[bytes] = [b""]  # the head, once the count is known
    if type(entries) in _BATCH_TYPES:
        count = _enc_batch(entries, prev, parts)
    else:
        count = _enc_entries(entries, prev, parts)
    if prev + count > MAX_VALUE:
        raise EncodingError("encode AppendEntries", f"last entry index {prev + count} exceeds 2**63-1")
    parts[0] = _APPEND_HEAD.pack(VERSION, code, term, leader, prev, prev_term, commit, count)
    return parts


def _enc_entries(entries: Any, prev: int, parts: List[bytes]) -> int:
    """Any sequence of LogEntry: entry heads and commands onto `parts`; returns the count."""
    append = parts.append
    pack = _ENTRY_HEAD.pack
    index = prev
    for entry in entries:
        index += 1
        entry_term, kind, command = entry.term, entry.kind, entry.command
        # Indexes are not sent: the receiver numbers entries from prev_log_index + 1.
        if entry.index != index or entry_term >> _BITS or not 0 <= kind <= _MAX_KIND:
            raise _bad_entry(index - prev - 1, index, entry.index, entry_term, kind)
        command = _as_bytes(command, "command")
        append(pack(entry_term, kind, len(command)))
        append(command)
    return index - prev


def _enc_batch(batch: Any, prev: int, parts: List[bytes]) -> int:
    """An EntryBatch, read column by column: the same bytes and errors as its entries would
    give through `_enc_entries`, without building a LogEntry per entry."""
    terms, kinds, commands = batch.terms, batch.kinds, batch.commands
    count = len(commands)
    if len(terms) != count or len(kinds) != count:
        raise EncodingError(
            "encode AppendEntries",
            f"EntryBatch columns differ in length: {len(terms)} terms, {len(kinds)} kinds, "
            f"{count} commands",
        )
    if not count:
        return 0
    first = batch.first_index
    # One pass over each column at C speed decides whether the checked loop below is needed.
    if (
        first != prev + 1
        or min(terms) < 0
        or max(terms) > MAX_VALUE
        or max(kinds) > _MAX_KIND
        or not all(type(command) is bytes for command in commands)
    ):
        commands = _checked_batch(first, terms, kinds, commands, prev)
    pack = _ENTRY_HEAD.pack
    extend = parts.extend
    for entry_term, kind, command in zip(terms, kinds, commands):
        extend((pack(entry_term, kind, len(command)), command))
    return count


def _checked_batch(first: Any, terms: Any, kinds: bytes, commands: Any, prev: int) -> List[bytes]:
    """Entry by entry, in the order `_enc_entries` checks: raises for the first bad entry, or
    returns the commands as bytes."""
    out: List[bytes] = []
    for position, (entry_term, kind, command) in enumerate(zip(terms, kinds, commands)):
        index = prev + 1 + position
        got_index = first + position
        if got_index != index or entry_term >> _BITS or kind > _MAX_KIND:
            raise _bad_entry(position, index, got_index, entry_term, _KINDS[kind] if kind <= _MAX_KIND else kind)
        out.append(_as_bytes(command, "command"))
    return out


def _enc_append_reply(m: AppendEntriesReply, code: int) -> List[bytes]:
    term, sender, match, c_index, c_term = (
        m.term, m.from_, m.match_index, m.conflict_index, m.conflict_term
    )
    if (term | sender | match | c_index | c_term) >> _BITS or not sender or type(m.success) is not bool:
        raise _out_of_range(m)
    return [_APPEND_REPLY.pack(VERSION, code, term, m.success, sender, match, c_index, c_term)]


def _enc_install(m: InstallSnapshot, code: int) -> List[bytes]:
    term, leader, snapshot = m.term, m.leader, m.snapshot
    index, snap_term, config = snapshot.index, snapshot.term, snapshot.config
    voters, learners = config.voters, config.learners
    if (term | leader | index | snap_term) >> _BITS or not leader:
        raise _out_of_range(
            m, f"term={term!r} leader={leader!r} snapshot.index={index!r} snapshot.term={snap_term!r}"
        )
    if type(voters) is not tuple or type(learners) is not tuple or not _members_ok(voters, learners):
        raise EncodingError(
            "encode InstallSnapshot",
            f"config must be sorted tuples of distinct ids, as Membership.of makes: {config!r}",
        )
    data = _as_bytes(snapshot.data, "snapshot data")
    ids = voters + learners
    return [
        _SNAPSHOT_HEAD.pack(VERSION, code, term, leader, index, snap_term, len(voters), len(learners)),
        struct.pack(f"<{len(ids)}Q", *ids),
        _LENGTH.pack(len(data)),
        data,
    ]


def _enc_install_reply(m: InstallSnapshotReply, code: int) -> List[bytes]:
    term, sender, index = m.term, m.from_, m.last_index
    if (term | sender | index) >> _BITS or not sender:
        raise _out_of_range(m)
    return [_TRIPLE.pack(VERSION, code, term, sender, index)]


def _enc_timeout_now(m: TimeoutNow, code: int) -> List[bytes]:
    term, leader = m.term, m.leader
    if (term | leader) >> _BITS or not leader:
        raise _out_of_range(m)
    return [_TIMEOUT_NOW.pack(VERSION, code, term, leader)]


def _enc_read_probe(m: ReadProbe, code: int) -> List[bytes]:
    term, leader, seq = m.term, m.leader, m.seq
    if (term | leader | seq) >> _BITS or not leader:
        raise _out_of_range(m)
    return [_TRIPLE.pack(VERSION, code, term, leader, seq)]


def _enc_read_probe_reply(m: ReadProbeReply, code: int) -> List[bytes]:
    term, sender, seq = m.term, m.from_, m.seq
    if (term | sender | seq) >> _BITS or not sender:
        raise _out_of_range(m)
    return [_TRIPLE.pack(VERSION, code, term, sender, seq)]


_Encoder = Callable[[Any, int], List[bytes]]
_ENCODER_OF: Dict[Type[Message], _Encoder] = {
    PreVote: _enc_pre_vote,
    PreVoteReply: _enc_vote_reply,
    RequestVote: _enc_request_vote,
    RequestVoteReply: _enc_vote_reply,
    AppendEntries: _enc_append,
    AppendEntriesReply: _enc_append_reply,
    InstallSnapshot: _enc_install,
    InstallSnapshotReply: _enc_install_reply,
    TimeoutNow: _enc_timeout_now,
    ReadProbe: _enc_read_probe,
    ReadProbeReply: _enc_read_probe_reply,
}
_ENCODERS: Dict[type, Tuple[_Encoder, int]] = {
    cls: (encoder, MESSAGE_CODES[cls]) for cls, encoder in _ENCODER_OF.items()
}


def _encode_parts(message: Message) -> List[bytes]:
    try:
        encoder, code = _ENCODERS[type(message)]
    except KeyError:
        raise EncodingError("encode", f"not a raftfast message: {type(message).__name__}") from None
    try:
        return encoder(message, code)
    except (struct.error, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # A field of the wrong type, or a count or length too wide for its slot.
        raise EncodingError(f"encode {type(message).__name__}", str(exc)) from None


def encode(message: Message) -> bytes:
    """The version-1 encoding of `message`; EncodingError for a non-message or a bad field."""
    return b"".join(_encode_parts(message))


def encode_frame(message: Message, max_frame: int = MAX_FRAME) -> bytes:
    """`encode(message)` behind its u32 little-endian length, ready for a stream.

    Raises EncodingError when the payload exceeds `max_frame`, the bound receivers enforce.
    """
    parts = _encode_parts(message)
    size = sum(map(len, parts))
    if size > max_frame:
        raise EncodingError(
            "encode_frame", f"{size}-byte payload exceeds the {max_frame}-byte frame limit"
        )
    parts.insert(0, _LENGTH.pack(size))
    return b"".join(parts)


# -- decoders: (payload, message class) -> message ---------------------------------------------


def _malformed(cls: type, detail: str) -> EncodingError:
    return EncodingError(f"decode {cls.__name__}", detail)


def _bad_size(cls: type, expected: int, got: int) -> EncodingError:
    return _malformed(cls, f"expected {expected} bytes, got {got}")


_RANGE = "a term, index or sequence number above 2**63-1, a node id of 0, or a flag not 0/1"


def _dec_pre_vote(data: bytes, cls: Type[PreVote]) -> PreVote:
    if len(data) != _PRE_VOTE.size:
        raise _bad_size(cls, _PRE_VOTE.size, len(data))
    _, _, term, candidate, index, last_term = _PRE_VOTE.unpack(data)
    if (term | candidate | index | last_term) >> _BITS or not candidate:
        raise _malformed(cls, _RANGE)
    return cls(term, candidate, index, last_term)


def _dec_request_vote(data: bytes, cls: Type[RequestVote]) -> RequestVote:
    if len(data) != _REQUEST_VOTE.size:
        raise _bad_size(cls, _REQUEST_VOTE.size, len(data))
    _, _, term, candidate, index, last_term, force = _REQUEST_VOTE.unpack(data)
    if (term | candidate | index | last_term) >> _BITS or not candidate or force > 1:
        raise _malformed(cls, _RANGE)
    return cls(term, candidate, index, last_term, force == 1)


def _dec_vote_reply(data: bytes, cls: Type[Union[PreVoteReply, RequestVoteReply]]) -> Message:
    if len(data) != _VOTE_REPLY.size:
        raise _bad_size(cls, _VOTE_REPLY.size, len(data))
    _, _, term, granted, sender = _VOTE_REPLY.unpack(data)
    if (term | sender) >> _BITS or not sender or granted > 1:
        raise _malformed(cls, _RANGE)
    return cls(term, granted == 1, sender)


def _dec_append(data: bytes, cls: Type[AppendEntries]) -> AppendEntries:
    end = len(data)
    offset = _APPEND_HEAD.size
    if end < offset:
        raise _malformed(cls, f"{end} bytes is shorter than the {offset}-byte head")
    _, _, term, leader, prev, prev_term, commit, count = _APPEND_HEAD.unpack_from(data)
    if (term | leader | prev | prev_term | commit) >> _BITS or not leader:
        raise _malformed(cls, _RANGE)
    # Bytes left for commands once every entry's head is paid for. Checking it before building
    # anything bounds the entry list by the input; it must end at exactly zero.
    spare = end - offset - count * _ENTRY_HEAD.size
    if spare < 0:
        raise _malformed(cls, f"{count} entries cannot fit in {end - offset} bytes")
    if prev + count > MAX_VALUE:
        raise _malformed(cls, f"{count} entries after index {prev} run past 2**63-1")
    terms: List[int] = []
    kinds = bytearray(count)
    commands: List[bytes] = []
    add_term = terms.append
    add_command = commands.append
    unpack = _ENTRY_HEAD.unpack_from
    head = _ENTRY_HEAD.size
    for i in range(count):
        entry_term, kind, size = unpack(data, offset)
        spare -= size
        if spare < 0 or entry_term >> _BITS or kind > _MAX_KIND:
            raise _malformed(
                cls,
                f"entry {i}: command overruns the message, term above 2**63-1 or unknown kind",
            )
        offset += head
        stop = offset + size
        add_term(entry_term)
        kinds[i] = kind
        add_command(data[offset:stop])
        offset = stop
    if spare:
        raise _malformed(cls, f"{spare} trailing bytes")
    # Entries are numbered from prev + 1. An empty batch after the last possible index says
    # MAX_VALUE, which EntryBatch (an int64 in the compiled build) can hold; it carries nothing.
    entries = EntryBatch(min(prev + 1, MAX_VALUE), terms, bytes(kinds), commands)
    return cls(term, leader, prev, prev_term, entries, commit)


def _dec_append_reply(data: bytes, cls: Type[AppendEntriesReply]) -> AppendEntriesReply:
    if len(data) != _APPEND_REPLY.size:
        raise _bad_size(cls, _APPEND_REPLY.size, len(data))
    _, _, term, success, sender, match, c_index, c_term = _APPEND_REPLY.unpack(data)
    if (term | sender | match | c_index | c_term) >> _BITS or not sender or success > 1:
        raise _malformed(cls, _RANGE)
    return cls(term, success == 1, sender, match, c_index, c_term)


def _dec_install(data: bytes, cls: Type[InstallSnapshot]) -> InstallSnapshot:
    end = len(data)
    offset = _SNAPSHOT_HEAD.size
    if end < offset:
        raise _malformed(cls, f"{end} bytes is shorter than the {offset}-byte head")
    _, _, term, leader, index, snap_term, n_voters, n_learners = _SNAPSHOT_HEAD.unpack_from(data)
    if (term | leader | index | snap_term) >> _BITS or not leader:
        raise _malformed(cls, _RANGE)
    n_ids = n_voters + n_learners
    if end - offset < n_ids * _ID_SIZE + _LENGTH.size:
        raise _malformed(cls, f"{n_ids} member ids and a data length cannot fit in {end - offset} bytes")
    ids = struct.unpack_from(f"<{n_ids}Q", data, offset)
    voters, learners = ids[:n_voters], ids[n_voters:]
    if not _members_ok(voters, learners):
        raise _malformed(cls, "config ids must be in 1..2**63-1, sorted, distinct and disjoint")
    offset += n_ids * _ID_SIZE
    (size,) = _LENGTH.unpack_from(data, offset)
    offset += _LENGTH.size
    if end - offset != size:
        raise _malformed(cls, f"snapshot data is {size} bytes but {end - offset} remain")
    return cls(term, leader, Snapshot(index, snap_term, Membership(voters, learners), data[offset:]))


_Triple = Union[InstallSnapshotReply, ReadProbe, ReadProbeReply]


def _dec_triple(data: bytes, cls: Type[_Triple]) -> Message:
    if len(data) != _TRIPLE.size:
        raise _bad_size(cls, _TRIPLE.size, len(data))
    _, _, term, node, value = _TRIPLE.unpack(data)
    if (term | node | value) >> _BITS or not node:
        raise _malformed(cls, _RANGE)
    return cls(term, node, value)


def _dec_timeout_now(data: bytes, cls: Type[TimeoutNow]) -> TimeoutNow:
    if len(data) != _TIMEOUT_NOW.size:
        raise _bad_size(cls, _TIMEOUT_NOW.size, len(data))
    _, _, term, leader = _TIMEOUT_NOW.unpack(data)
    if (term | leader) >> _BITS or not leader:
        raise _malformed(cls, _RANGE)
    return cls(term, leader)


_Decoder = Callable[[bytes, Any], Message]
_DECODER_OF: Dict[Type[Message], _Decoder] = {
    PreVote: _dec_pre_vote,
    PreVoteReply: _dec_vote_reply,
    RequestVote: _dec_request_vote,
    RequestVoteReply: _dec_vote_reply,
    AppendEntries: _dec_append,
    AppendEntriesReply: _dec_append_reply,
    InstallSnapshot: _dec_install,
    InstallSnapshotReply: _dec_triple,
    TimeoutNow: _dec_timeout_now,
    ReadProbe: _dec_triple,
    ReadProbeReply: _dec_triple,
}
_DECODERS: Dict[int, Tuple[_Decoder, type]] = {
    MESSAGE_CODES[cls]: (decoder, cls) for cls, decoder in _DECODER_OF.items()
}


def decode(data: Buffer) -> Message:
    """The message `data` encodes; EncodingError (and nothing else) for anything that is not
    exactly one version-1 encoding. Accepts bytes, bytearray and memoryview."""
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EncodingError(
                "decode", f"expected bytes, bytearray or memoryview, got {type(data).__name__}"
            )
        try:
            data = bytes(data)  # one copy, so commands slice out as bytes
        except ValueError as exc:  # a released memoryview
            raise EncodingError("decode", str(exc)) from None
    if len(data) < MIN_FRAME:
        raise EncodingError("decode", f"{len(data)} bytes is shorter than the 2-byte header")
    if data[0] != VERSION:
        raise EncodingError("decode", f"unsupported version {data[0]} (this build reads {VERSION})")
    try:
        decoder, cls = _DECODERS[data[1]]
    except KeyError:
        raise EncodingError("decode", f"unknown message type {data[1]}") from None
    return decoder(data, cls)


# -- framing ---------------------------------------------------------------------------------


class FrameReader:
    """Splits a byte stream into frame payloads: each frame is a u32 little-endian length, then
    that many bytes. Payloads are returned as bytes, ready for `decode`.

    A length prefix below 2 or above `max_frame` means the stream is garbage or out of step:
    `feed` raises EncodingError, and raises again on every later call, since no later byte can
    be trusted. Close the connection. Frames completed earlier in that same call are dropped
    with it.
    """

    __slots__ = ("_buffer", "_need", "_max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if max_frame < MIN_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_FRAME}, got {max_frame}")
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._need = _LENGTH.size  # buffered bytes needed before a frame can complete

    @property
    def max_frame(self) -> int:
        return self._max_frame

    @property
    def buffered(self) -> int:
        """Bytes held towards an incomplete frame (non-zero at EOF means a truncated stream)."""
        return len(self._buffer)

    def feed(self, data: Buffer) -> List[bytes]:
        """Add `data`; return the payloads of every frame it completes, in order."""
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        if end < self._need:  # a large frame arriving in pieces: wait without re-parsing
            return []
        frames: List[bytes] = []
        prefix = _LENGTH.size
        unpack = _LENGTH.unpack_from
        max_frame = self._max_frame
        start = 0
        need = prefix
        bad = -1
        with memoryview(buffer) as view:  # released before the buffer is resized below
            while end - start >= prefix:
                (size,) = unpack(buffer, start)
                if size < MIN_FRAME or size > max_frame:
                    bad = size
                    break
                stop = start + prefix + size
                if stop > end:
                    need = stop - start
                    break
                frames.append(bytes(view[start + prefix : stop]))
                start = stop
        del buffer[:start]
        self._need = need
        if bad >= 0:
            # The bad prefix stays at the front, so every later call fails the same way.
            raise EncodingError("frame", f"length prefix {bad} is outside {MIN_FRAME}..{max_frame}")
        return frames
