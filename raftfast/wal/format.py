"""Record encoding: how one WAL record is laid out in a segment file. All integers little-endian.

    frame   = magic:4 | crc:u32 | size:u32 | synced:u64 | type:u8 | payload:size
    seed    = CRC32C of seq:u64, the segment's number (version 1: 0)
    magic   = "\x8eRFW" xor seed (a little-endian u32)
    crc     = CRC32C over size, synced, type and payload, starting from seed
              so the records of a recycled segment file's earlier life never pass for its own,
              nor even look like records of it (a search for its magic skips them)
    synced  = the segment offset that was durable (fdatasync'd) when this record was written;
              recovery uses it to tell a torn tail from corruption of synced data

Payloads by type:

    HEADER      version:u16 seq:u64 prev_end:u64 high_water:u64 last_index:u64
                snap_index:u64 snap_term:u64 hs_term:u64 hs_has_vote:u8 hs_vote:u64
    HARD_STATE  term:u64 has_vote:u8 vote:u64
    APPEND      first:u64 count:u32 nruns:u32 | nruns x (term:u64 kind:u8 n:u32)
                | count x length:u32 | the commands, concatenated
    TRUNCATE    from_index:u64
    SNAPSHOT    index:u64 term:u64 kept:u8

An APPEND carries a whole `append()` call, so a batch of 256 entries is one frame costing
4 bytes per entry plus about 50 bytes per record.
"""

from __future__ import annotations

import struct
import sys
from array import array
from functools import lru_cache
from itertools import accumulate, pairwise
from typing import List, NamedTuple, Optional, Tuple

import crc32c

from ..types import HardState

MAGIC = b"\x8eRFW"
VERSION = 2
"""The version new segments are written in. Version 1 segments (checksums not seeded with the
segment number) are still read, and written to while one is the active segment."""
VERSIONS = (1, 2)

PREFIX = struct.Struct("<4sI")  # magic, crc
REGION = struct.Struct("<IQB")  # size, synced, type: the start of the crc'd region
FRAME = struct.Struct("<4sIIQB")  # both, for parsing in one call
FRAME_SIZE = FRAME.size

HEADER, HARD_STATE, APPEND, TRUNCATE, SNAPSHOT = 1, 2, 3, 4, 5
TYPE_NAMES = {HEADER: "HEADER", HARD_STATE: "HARD_STATE", APPEND: "APPEND", TRUNCATE: "TRUNCATE", SNAPSHOT: "SNAPSHOT"}

MAX_ENTRY_BYTES = 64 << 20
"""The largest command an entry may carry."""
MAX_PAYLOAD = MAX_ENTRY_BYTES + (1 << 20)
"""The largest record payload: one maximal entry plus room for the per-entry overhead of a
batch; larger appends are split over several records."""

_HEADER = struct.Struct("<HQQQQQQQBQ")
_VERSION = struct.Struct("<H")
_HARD_STATE = struct.Struct("<QBQ")
_APPEND = struct.Struct("<QII")
_RUN = struct.Struct("<QBI")
_INDEX = struct.Struct("<Q")
_SEQ = _INDEX
_U32 = struct.Struct("<I")
_MAGIC_U32 = _U32.unpack(MAGIC)[0]
_HEADER_SEQ_AT = FRAME_SIZE + 2  # a header's seq, after its version
_SNAPSHOT = struct.Struct("<QQB")

APPEND_OVERHEAD = _APPEND.size
ENTRY_OVERHEAD = _RUN.size + 4
"""An upper bound on what one entry adds to a record besides its command: its length field,
and a run of its own in the worst case."""

_KINDS = 3
_BIG_ENDIAN = sys.byteorder == "big"


class FormatError(Exception):
    """A record whose checksum is valid but whose contents do not make sense."""


class Header(NamedTuple):
    """What a segment starts with: where it sits in the chain and the state when it was made."""

    seq: int
    prev_end: int
    high_water: int
    last_index: int
    snap_index: int
    snap_term: int
    hard_state: HardState


Run = Tuple[int, int, int]
"""(term, kind, count): consecutive entries sharing a term and a kind."""


def region(rtype: int, synced: int, payload: List[bytes], size: int) -> bytes:
    """The checksummed part of a frame; `size` is the total length of `payload`."""
    return b"".join((REGION.pack(size, synced, rtype), *payload))


def prefix(magic: bytes, crc: int) -> bytes:
    return PREFIX.pack(magic, crc)


def segment_seed(seq: int, version: int = VERSION) -> int:
    """What the checksums of segment `seq`'s records start from: the CRC32C of its number
    (version 2), so a record is valid in its own segment only; 0 in version 1. Distinct for
    every seq below 2**32 (a CRC is injective on inputs no longer than itself), so a recycled
    file's old seed is never its new one."""
    return crc32c.crc32c(_SEQ.pack(seq)) if version >= 2 else 0


def segment_magic(seed: int) -> bytes:
    """The magic of a segment's records: MAGIC xor its seed (MAGIC itself in version 1)."""
    return _U32.pack(_MAGIC_U32 ^ seed)


def seed_of(data: bytes) -> int:
    """The checksum seed of the segment image `data`, from its header's version and seq. Those
    fields are read unchecked (a wrong seed fails the header's own checksum, which the caller
    checks next), but must agree with the header's magic. 0 (version 1) otherwise."""
    if len(data) >= _HEADER_SEQ_AT + _SEQ.size and data[FRAME_SIZE - 1] == HEADER:
        (version,) = _VERSION.unpack_from(data, FRAME_SIZE)
        (seq,) = _SEQ.unpack_from(data, _HEADER_SEQ_AT)
        seed = segment_seed(seq, version)
        if data[:4] == segment_magic(seed):
            return seed
    return 0


def frame(rtype: int, synced: int, payload: bytes, seed: int) -> bytes:
    """A whole frame, for the small records where an extra copy does not matter; `seed` is its
    segment's (`segment_seed`)."""
    body = region(rtype, synced, [payload], len(payload))
    return prefix(segment_magic(seed), crc32c.crc32c(body, seed)) + body


def _pack_vote(hs: HardState) -> Tuple[int, int]:
    return (0, 0) if hs.voted_for is None else (1, hs.voted_for)


def _unpack_hard_state(term: int, has_vote: int, vote: int) -> HardState:
    if has_vote > 1:
        raise FormatError(f"vote flag {has_vote}")
    return HardState(term, vote if has_vote else None)


def _pack(st: struct.Struct, *values: int) -> bytes:
    try:
        return st.pack(*values)
    except struct.error as e:
        raise ValueError(f"value out of range for the WAL format: {values}") from e


def header_payload(h: Header) -> bytes:
    return _pack(
        _HEADER, VERSION, h.seq, h.prev_end, h.high_water, h.last_index, h.snap_index, h.snap_term,
        h.hard_state.term, *_pack_vote(h.hard_state),
    )


def hard_state_payload(hs: HardState) -> bytes:
    return _pack(_HARD_STATE, hs.term, *_pack_vote(hs))


def truncate_payload(from_index: int) -> bytes:
    return _pack(_INDEX, from_index)


def snapshot_payload(index: int, term: int, kept: bool) -> bytes:
    return _pack(_SNAPSHOT, index, term, kept)


def append_payload(first: int, runs: List[Run], lens: array, commands: List[bytes], data_size: int) -> Tuple[List[bytes], int]:
    """The parts of an APPEND payload and their total size; `lens` is an array('I') of the
    command lengths and `data_size` their sum."""
    head = _pack(_APPEND, first, len(commands), len(runs)) + b"".join(_pack(_RUN, *run) for run in runs)
    if _BIG_ENDIAN:
        lens = array("I", lens)
        lens.byteswap()
    return [head, lens.tobytes(), *commands], len(head) + 4 * len(commands) + data_size


def _exact(st: struct.Struct, data: bytes, start: int, end: int) -> tuple:
    if end - start != st.size:
        raise FormatError(f"payload of {end - start} bytes, expected {st.size}")
    return st.unpack_from(data, start)


def decode_header(data: bytes, start: int, end: int) -> Header:
    version, seq, prev_end, high_water, last_index, snap_index, snap_term, term, has_vote, vote = _exact(
        _HEADER, data, start, end
    )
    if version not in VERSIONS:
        raise FormatError(f"segment format version {version}, this build reads {', '.join(map(str, VERSIONS))}")
    if snap_index > last_index:
        raise FormatError(f"snapshot index {snap_index} above last index {last_index}")
    return Header(seq, prev_end, high_water, last_index, snap_index, snap_term, _unpack_hard_state(term, has_vote, vote))


def decode_hard_state(data: bytes, start: int, end: int) -> HardState:
    return _unpack_hard_state(*_exact(_HARD_STATE, data, start, end))


def decode_truncate(data: bytes, start: int, end: int) -> int:
    (index,) = _exact(_INDEX, data, start, end)
    if index < 1:
        raise FormatError("truncate at index 0")
    return index


def decode_snapshot(data: bytes, start: int, end: int) -> Tuple[int, int, bool]:
    index, term, kept = _exact(_SNAPSHOT, data, start, end)
    if kept > 1:
        raise FormatError(f"kept flag {kept}")
    return index, term, bool(kept)


def decode_append(data: bytes, start: int, end: int, with_commands: bool = True) -> Tuple[int, List[Run], Optional[List[bytes]]]:
    """(first index, runs, commands) of an APPEND payload at data[start:end].

    Every length is checked against the record before anything is allocated from it, and the
    runs must be valid kinds with non-decreasing terms covering every entry.
    """
    if end - start < _APPEND.size:
        raise FormatError("append payload shorter than its header")
    first, count, nruns = _APPEND.unpack_from(data, start)
    pos = start + _APPEND.size
    lens_at = pos + nruns * _RUN.size
    data_at = lens_at + 4 * count
    if first < 1 or count == 0 or not 0 < nruns <= count or data_at > end:
        raise FormatError(f"append header (first {first}, count {count}, runs {nruns}) does not fit the record")
    runs = [_RUN.unpack_from(data, pos + i * _RUN.size) for i in range(nruns)]
    term = 0
    covered = 0
    for run_term, kind, n in runs:
        if run_term < term or kind >= _KINDS or n == 0:
            raise FormatError(f"bad run (term {run_term}, kind {kind}, count {n})")
        term = run_term
        covered += n
    if covered != count:
        raise FormatError(f"runs cover {covered} entries, the record holds {count}")
    lens = array("I")
    lens.frombytes(data[lens_at:data_at])
    if _BIG_ENDIAN:
        lens.byteswap()
    size = lens[0]
    if lens.count(size) == count:
        if data_at + size * count != end:
            raise FormatError(f"entry lengths add up to {size * count} bytes, the record holds {end - data_at}")
        if not with_commands:
            return first, runs, None
        # Commands of one length (fixed-size records, the common case) are cut by one cached
        # struct call: about 9x faster than slicing them one by one.
        return first, runs, list(_uniform(count, size).unpack_from(data, data_at))
    bounds = list(accumulate(lens, initial=data_at))
    if bounds[-1] != end:
        raise FormatError(f"entry lengths add up to {bounds[-1] - data_at} bytes, the record holds {end - data_at}")
    if not with_commands:
        return first, runs, None
    return first, runs, [data[a:b] for a, b in pairwise(bounds)]


@lru_cache(maxsize=64)
def _uniform(count: int, size: int) -> struct.Struct:
    return struct.Struct(f"{size}s" * count)
