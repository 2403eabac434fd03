# cython: language_level=3
"""Compiled `encode_puts` and `parse_responses`: the twin of `_loadgen_py`, same results and
errors.

A run of requests is written straight into one bytes object (no object per request), and
the open loop's stamps are computed and put in flight here (no list of them); the responses
are read straight from the buffer, and latencies are appended to the array a batch at a time.
The stamps in flight stay in the writer's dict (the open loop and the reconnect read it).
"""

cimport cython
from cpython cimport array
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_FromUnsignedLongLong
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.math cimport INFINITY
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from raftfast.kv._wire cimport put_u32, put_u64, u32

import struct
from operator import index

from .protocol import Op, Status

cdef extern from *:
    # gcc and clang: the difference, or 1 when it does not fit
    bint _sub_overflows "__builtin_sub_overflow" (int64_t a, int64_t b, int64_t* out) nogil

MORE = 0  # parse_responses stopped at an incomplete frame (or the end): wait for more bytes
NOT_LEADER = 1  # ... at a complete NOT_LEADER response: the caller decodes the redirect
MALFORMED = 2  # ... at a frame whose length is impossible: the connection is not to be trusted
MAX_RESPONSE = 1 << 16  # a put's response is a status and at most a short message or address

DEF PREFIX = 33  # a request head up to the key length: length, op, request id, client id, seq, ack
DEF HEAD = 9  # RESPONSE.size
DEF BATCH = 256  # latencies gathered before one append to the array
cdef uint8_t _PUT = Op.PUT
cdef uint8_t _OK_STATUS = Status.OK
cdef uint8_t _NOT_LEADER_STATUS = Status.NOT_LEADER
cdef uint32_t _MAX_RESPONSE = MAX_RESPONSE
cdef int _MALFORMED = MALFORMED
cdef int _NOT_LEADER = NOT_LEADER
cdef object _SEQS = 1 << 64
cdef object _INDEXES = 1 << 53  # write indexes are exact as doubles below this: both twins multiply alike
cdef object _INT64 = 1 << 63


def encode_puts(tails, cursor, client_id, first_seq, count, ack, inflight=None, start=0,
                interval=0.0, first_index=0):
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
    cdef Py_ssize_t nkeys, n, i, k, size = 0, tlen
    cdef uint64_t cid, seq, ack_
    cdef int64_t first, start_, stamp
    cdef double step, last
    cdef bytes out
    cdef uint8_t* p
    cdef object tail
    if type(tails) is not list:
        raise TypeError(f"encode_puts: tails is a {type(tails).__name__}, not a list")
    nkeys = PyList_GET_SIZE(tails)
    if not 0 <= cursor < nkeys:  # compared as Python ints: no overflow on a huge one
        raise ValueError(f"encode_puts: cursor {cursor} outside {nkeys} tails")
    if count < 0 or not (0 <= client_id < _SEQS and 0 <= first_seq and first_seq + count <= _SEQS and 0 <= ack < _SEQS):
        raise ValueError("encode_puts: count, client id, seq or ack out of range")
    if inflight is not None and type(inflight) is not dict:
        raise TypeError(f"encode_puts: inflight is a {type(inflight).__name__}, not a dict")
    start = index(start)
    first_index = index(first_index)
    if not isinstance(interval, (int, float)):
        raise TypeError(f"encode_puts: interval is a {type(interval).__name__}, not a number")
    step = float(interval)
    if not 0.0 <= step < INFINITY:
        raise ValueError(f"encode_puts: interval {step} is not a finite number >= 0")
    if not (0 <= first_index and first_index + count <= _INDEXES and -_INT64 <= start < _INT64):
        raise ValueError("encode_puts: write index or start out of range")
    n = count
    first = first_index
    start_ = start
    # stamps ascend with the index: when the last fits in int64, so do the others, and every
    # product is below 2^63, where the cast to int64 truncates as int() does
    if n:
        last = <double>(first + n - 1) * step
        if last >= 9223372036854775808.0 or (start_ > 0 and <int64_t>last > INT64_MAX - start_):
            raise ValueError("encode_puts: a stamp outside int64")
    cid = client_id
    ack_ = ack
    # first pass: check the tails and size the result
    k = cursor
    for i in range(n):
        tail = <object>PyList_GET_ITEM(tails, k)
        if not PyBytes_Check(tail):
            raise TypeError(f"encode_puts: tail {k} is a {type(tail).__name__}, not bytes")
        tlen = PyBytes_GET_SIZE(tail)
        if tlen > <Py_ssize_t>0xFFFFFFFF - (PREFIX - 4):  # what struct says of the length prefix
            raise struct.error("'I' format requires 0 <= number <= 4294967295")
        if size > PY_SSIZE_T_MAX - PREFIX - tlen:
            raise MemoryError()
        size += PREFIX + tlen
        k = k + 1 if k + 1 < nkeys else 0
    out = PyBytes_FromStringAndSize(NULL, size)
    p = <uint8_t*>PyBytes_AS_STRING(out)
    k = cursor
    seq = first_seq if n else 0  # first_seq may be 2^64 for an empty run
    for i in range(n):
        # the allocation above may have run a finalizer that changed the list: check again
        # what the writes below rely on
        if k >= PyList_GET_SIZE(tails):
            raise RuntimeError("encode_puts: the tails changed during the call")
        tail = <object>PyList_GET_ITEM(tails, k)
        if not PyBytes_Check(tail) or PREFIX + PyBytes_GET_SIZE(tail) > size:
            raise RuntimeError("encode_puts: the tails changed during the call")
        tlen = PyBytes_GET_SIZE(tail)
        size -= PREFIX + tlen
        put_u32(p, <uint32_t>(PREFIX - 4 + tlen))
        p[4] = _PUT
        put_u32(p + 5, <uint32_t>seq)
        put_u64(p + 9, cid)
        put_u64(p + 17, seq)
        put_u64(p + 25, ack_)
        memcpy(p + PREFIX, PyBytes_AS_STRING(tail), tlen)
        p += PREFIX + tlen
        seq += 1
        k = k + 1 if k + 1 < nkeys else 0
    if size:
        raise RuntimeError("encode_puts: the tails changed during the call")
    if inflight is not None:
        seq = first_seq if n else 0
        for i in range(n):
            stamp = start_ + <int64_t>(<double>(first + i) * step)
            (<dict>inflight)[PyLong_FromUnsignedLongLong(seq + <uint64_t>i)] = stamp
    return out, k


cdef int _flush(array.array latencies, const int64_t* batch, Py_ssize_t count) except -1:
    # frombytes, not a resize in place: it refuses (BufferError) to move storage that a
    # memoryview still points into, as append does
    if count:
        latencies.frombytes(PyBytes_FromStringAndSize(<const char*>batch, count * 8))
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
def parse_responses(bytes data not None, pos, next_seq, dict inflight not None, now, lo, hi,
                    array.array latencies not None):
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
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data), count = 0, at
    cdef int64_t batch[BATCH]  # latencies not yet appended
    cdef const uint8_t* buf = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef uint32_t length
    cdef uint64_t next_, base, seq
    cdef int64_t lo_, hi_, stamp, latency, now_
    cdef bint window
    cdef Py_ssize_t done = 0, errors = 0
    cdef int halt = 0  # MORE
    cdef object found
    # pos and now are compared as Python ints first, so a huge one is a ValueError, as in the
    # pure twin, not an OverflowError from the conversion
    if not 0 <= pos <= end:
        raise ValueError(f"parse_responses: pos {pos} outside {end} bytes")
    if not 0 < next_seq < _SEQS:
        raise ValueError(f"parse_responses: next_seq {next_seq} out of range")
    if not -_INT64 <= now < _INT64:
        raise ValueError(f"parse_responses: now {now} outside int64")
    if latencies.ob_descr.typecode != c'q':
        raise TypeError(f"parse_responses: latencies is not an array('q'): {latencies!r:.40}")
    at = pos
    now_ = now
    next_ = next_seq
    base = next_ & ~<uint64_t>0xFFFFFFFF
    # the window [lo, hi) as an inclusive int64 range [lo_, hi_]: stamps are int64, the bounds
    # may not be (the generator's "never" is 2^63)
    window = lo < hi and lo <= INT64_MAX and hi > INT64_MIN
    lo_ = INT64_MIN if lo < INT64_MIN else (lo if window else 0)
    hi_ = INT64_MAX if hi > INT64_MAX else (hi - 1 if window else 0)
    # every read below is of bytes at..at+HEAD-1 with end - at >= HEAD checked first
    while end - at >= HEAD:
        length = u32(buf + at)
        if length < HEAD - 4 or length > _MAX_RESPONSE:
            halt = _MALFORMED
            break
        if <Py_ssize_t>length > end - at - 4:
            break
        if buf[at + 8] == _NOT_LEADER_STATUS:
            halt = _NOT_LEADER
            break
        seq = base | u32(buf + at + 4)
        found = None
        if seq < next_:
            found = inflight.pop(PyLong_FromUnsignedLongLong(seq), None)
        elif base:
            found = inflight.pop(PyLong_FromUnsignedLongLong(seq - (<uint64_t>1 << 32)), None)
        # else: the seq would be negative, and no seq is
        if found is not None:
            done += 1
            if buf[at + 8] != _OK_STATUS:
                errors += 1
            else:
                stamp = found
                if window and lo_ <= stamp <= hi_:
                    if _sub_overflows(now_, stamp, &latency):
                        _flush(latencies, batch, count)
                        raise OverflowError("parse_responses: a latency outside int64")
                    if count == BATCH:
                        _flush(latencies, batch, count)
                        count = 0
                    batch[count] = latency
                    count += 1
        at += 4 + <Py_ssize_t>length
    _flush(latencies, batch, count)
    return at, done, errors, halt
