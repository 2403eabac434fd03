"""The load generator's per-write loops: the pure twin of `_loadgen_c`.

`encode_puts(tails, cursor, client_id, first_seq, count, ack[, inflight, start, interval,
first_index])` builds the put requests one writer sends in one write (the open loop also has
them put in flight, stamped with their scheduled times); `parse_responses(data, pos, next_seq,
inflight, now, lo, hi, latencies)` reads the responses it gets back. Both have a compiled twin with the same results
and errors (see `raftfast.kv.loadgen` for what the arguments hold).
"""

from __future__ import annotations

import math
import struct
from array import array
from operator import index
from typing import Dict, List, Optional, Tuple

from .protocol import RESPONSE, Op, Status

__all__ = ["MORE", "NOT_LEADER", "MALFORMED", "MAX_RESPONSE", "encode_puts", "parse_responses"]

MORE = 0  # parse_responses stopped at an incomplete frame (or the end): wait for more bytes
NOT_LEADER = 1  # ... at a complete NOT_LEADER response: the caller decodes the redirect
MALFORMED = 2  # ... at a frame whose length is impossible: the connection is not to be trusted
MAX_RESPONSE = 1 << 16  # a put's response is a status and at most a short message or address

_PREFIX = struct.Struct("<IBIQQQ")  # a request head up to the key length (REQUEST's first six)
_LENGTH = _PREFIX.size - 4  # a request's length prefix counts the prefix after it, and the tail
_HEAD = RESPONSE.size
_PUT = int(Op.PUT)
_OK = int(Status.OK)
_NOT_LEADER = int(Status.NOT_LEADER)
_SEQS = 1 << 64
_INDEXES = 1 << 53  # write indexes are exact as doubles below this: both twins multiply alike
_INT64 = 1 << 63


def encode_puts(tails: List[bytes], cursor: int, client_id: int, first_seq: int, count: int, ack: int,
                inflight: Optional[Dict[int, int]] = None, start: int = 0, interval: float = 0.0,
                first_index: int = 0) -> Tuple[bytes, int]:
    """(requests, cursor after them): the put requests for seqs first_seq..first_seq+count-1,
    joined, the i-th for key `tails[(cursor + i) % len(tails)]`. A tail (bytes) is the end of a
    request head (key, value and expected lengths) followed by the key and the value; a
    request's id is its seq's low 32 bits. With `inflight` (a dict), the puts are also put in
    flight: seq first_seq + i with the stamp `start + int((first_index + i) * interval)`, the
    scheduled time of write first_index + i (`loadgen.Schedule.time_of`). ValueError for a
    cursor outside the tails, a negative count, a client id, seq or ack outside 0..2^64-1, an
    interval that is not finite and >= 0, write indexes outside 0..2^53, a start or a stamp
    outside int64; TypeError for an inflight that is neither a dict nor None, a start or
    first_index that is not an int, an interval that is not an int or float, tails that are
    not a list. On an error, nothing is put in flight."""
    if type(tails) is not list:
        raise TypeError(f"encode_puts: tails is a {type(tails).__name__}, not a list")
    nkeys = len(tails)
    if not 0 <= cursor < nkeys:
        raise ValueError(f"encode_puts: cursor {cursor} outside {nkeys} tails")
    if count < 0 or not (0 <= client_id < _SEQS and 0 <= first_seq and first_seq + count <= _SEQS and 0 <= ack < _SEQS):
        raise ValueError("encode_puts: count, client id, seq or ack out of range")
    if inflight is not None and type(inflight) is not dict:
        raise TypeError(f"encode_puts: inflight is a {type(inflight).__name__}, not a dict")
    start = index(start)
    first_index = index(first_index)
    if not isinstance(interval, (int, float)):
        raise TypeError(f"encode_puts: interval is a {type(interval).__name__}, not a number")
    interval = float(interval)
    if not 0.0 <= interval < math.inf:
        raise ValueError(f"encode_puts: interval {interval} is not a finite number >= 0")
    if not (0 <= first_index and first_index + count <= _INDEXES and -_INT64 <= start < _INT64):
        raise ValueError("encode_puts: write index or start out of range")
    if count:  # stamps ascend with the index: the last is the largest
        last = (first_index + count - 1) * interval
        if last >= 2.0 ** 63 or start + int(last) >= _INT64:
            raise ValueError("encode_puts: a stamp outside int64")
    pack = _PREFIX.pack
    out = []
    k = cursor
    for seq in range(first_seq, first_seq + count):
        tail = tails[k]
        out.append(pack(_LENGTH + len(tail), _PUT, seq & 0xFFFFFFFF, client_id, seq, ack))
        out.append(tail)
        k = k + 1 if k + 1 < nkeys else 0
    data = b"".join(out)
    if inflight is not None:
        inflight.update(zip(range(first_seq, first_seq + count),
                            [start + int(j * interval) for j in range(first_index, first_index + count)]))
    return data, k


def parse_responses(data: bytes, pos: int, next_seq: int, inflight: Dict[int, int], now: int, lo: int,
                    hi: int, latencies: array) -> Tuple[int, int, int, int]:
    """(pos, done, errors, halt): read the response frames in `data` from `pos` on. A response
    answers the seq in flight whose low 32 bits are its request id (the latest such seq below
    `next_seq`); that seq's stamp is popped from `inflight` and the write counts as done, an
    error too unless its status is OK, and an OK write whose stamp lies in [lo, hi) appends
    `now - stamp` to `latencies` (an array('q')). A response for no seq in flight is skipped.
    It stops at the first frame it cannot take: `halt` says why (MORE, NOT_LEADER or
    MALFORMED: a length below the head's or above MAX_RESPONSE) and `pos` is where that frame
    starts (for MORE, where the bytes left start). `inflight`'s keys are seqs and its stamps,
    like `now`, ints in the int64 range (ns). ValueError for `pos` outside `data`, a
    `next_seq` outside 1..2^64-1 or a `now` outside int64; TypeError for `latencies` of another
    typecode."""
    end = len(data)
    if not 0 <= pos <= end:
        raise ValueError(f"parse_responses: pos {pos} outside {end} bytes")
    if not 0 < next_seq < _SEQS:
        raise ValueError(f"parse_responses: next_seq {next_seq} out of range")
    if not -_INT64 <= now < _INT64:
        raise ValueError(f"parse_responses: now {now} outside int64")
    if not isinstance(latencies, array) or latencies.typecode != "q":
        raise TypeError(f"parse_responses: latencies is not an array('q'): {latencies!r:.40}")
    unpack = RESPONSE.unpack_from
    pop = inflight.pop
    base = next_seq & ~0xFFFFFFFF
    done = errors = 0
    halt = MORE
    while end - pos >= _HEAD:
        length, rid, status = unpack(data, pos)
        if not _HEAD - 4 <= length <= MAX_RESPONSE:
            halt = MALFORMED
            break
        if pos + 4 + length > end:
            break
        if status == _NOT_LEADER:
            halt = NOT_LEADER
            break
        seq = base | rid
        if seq >= next_seq:
            seq -= 1 << 32
        stamp = pop(seq, None)
        if stamp is not None:
            done += 1
            if status != _OK:
                errors += 1
            elif lo <= stamp < hi:
                latencies.append(now - stamp)
        pos += 4 + length
    return pos, done, errors, halt
