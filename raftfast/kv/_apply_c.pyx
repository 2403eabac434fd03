# cython: language_level=3
"""Compiled `apply_batch`, `apply_runs`, `scan_writes`, `snapshot_state` and `restore_state`:
the twin of `_apply_py`, same results and errors.

The request heads are read straight from the batch bytes; keys and values are built with one
allocation each, and response frames are written into one C buffer (`apply_runs`: one bytes
per run of requests, no object per response). Sessions and results live in the same Python
dicts as in the pure twin (the snapshot code reads them).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport PyObject
from libc.stdint cimport UINT32_MAX, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy
from raftfast.kv._wire cimport put_u32, put_u64, u16, u32, u64

import struct

from .errors import SnapshotFormatError
from .protocol import Op, Status

OK = (int(Status.OK), b"")
CAS_FAILED = (int(Status.CAS_FAILED), b"")
STALE = (int(Status.ERROR), b"stale sequence number: the client already acknowledged its reply")

cdef enum:
    HEAD = 43  # REQUEST.size
cdef uint32_t NO_VALUE = UINT32_MAX  # protocol.NO_VALUE: an expected length meaning "none"

cdef int _PUT = Op.PUT
cdef int _DELETE = Op.DELETE
cdef int _APPEND = Op.APPEND
cdef int _CAS = Op.CAS
cdef object _OK = OK
cdef object _CAS_FAILED = CAS_FAILED
cdef object _STALE = STALE


cdef inline bytes _slice(const uint8_t* buf, Py_ssize_t end, Py_ssize_t start, Py_ssize_t n):
    """buf[start:start+n] with Python's slice clamping."""
    if start > end:
        start = end
    if n > end - start:
        n = end - start
    if n < 0:
        n = 0
    return PyBytes_FromStringAndSize(<const char*>buf + start, n)


cdef inline void _put_frame(uint8_t* p, uint32_t rid, int status, bytes body, Py_ssize_t blen):
    """RESPONSE.pack(5 + blen, rid, status) + body, written at `p`."""
    put_u32(p, <uint32_t>(5 + blen))
    put_u32(p + 4, rid)
    p[8] = <uint8_t>status
    if blen:
        memcpy(p + 9, PyBytes_AS_STRING(body), blen)


cdef bytes _frame(uint32_t rid, object result):
    """RESPONSE.pack(5 + len(body), rid, status) + body."""
    cdef bytes body = result[1]
    cdef Py_ssize_t blen = PyBytes_GET_SIZE(body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 9 + blen)
    _put_frame(<uint8_t*>PyBytes_AS_STRING(out), rid, result[0], body, blen)
    return out


cdef struct _Out:
    # every response frame so far, back to back, and where each one ends
    uint8_t* data
    Py_ssize_t size, cap
    Py_ssize_t* ends
    Py_ssize_t n, ncap


cdef int _out_frame(_Out* out, uint32_t rid, object result) except -1:
    cdef bytes body = result[1]
    cdef Py_ssize_t blen = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t need = out.size + 9 + blen, cap
    cdef void* grown
    if need > out.cap:
        cap = max(need, 2 * out.cap, 4096)
        grown = realloc(out.data, cap)
        if grown == NULL:
            raise MemoryError()
        out.data = <uint8_t*>grown
        out.cap = cap
    if out.n == out.ncap:
        cap = max(2 * out.ncap, 256)
        grown = realloc(out.ends, cap * sizeof(Py_ssize_t))
        if grown == NULL:
            raise MemoryError()
        out.ends = <Py_ssize_t*>grown
        out.ncap = cap
    _put_frame(out.data + out.size, rid, result[0], body, blen)
    out.size = need
    out.ends[out.n] = need
    out.n += 1
    return 0


cdef object _apply_other(dict data, int op, bytes key, const uint8_t* buf, Py_ssize_t end,
                         Py_ssize_t vpos, Py_ssize_t vlen, uint32_t elen):
    cdef object current
    if op == _DELETE:
        data.pop(key, None)
        return _OK
    if op == _APPEND:
        data[key] = data.get(key, b"") + _slice(buf, end, vpos, vlen)
        return _OK
    current = data.get(key)
    if elen == NO_VALUE:
        matches = current is None
    else:
        matches = current == _slice(buf, end, vpos + vlen, elen)
    if matches:
        data[key] = _slice(buf, end, vpos, vlen)
        return _OK
    return _CAS_FAILED


def apply_batch(dict data, dict sessions, Py_ssize_t max_sessions, bytes batch, list replies, list frames=None):
    """Apply a batch entry (BATCH_TAG + write request frames) to `data` and `sessions` (client
    id -> [floor, {seq: result}], least recently active first, at most `max_sessions`). When
    `replies` is a list, append (client id, seq, result) for every request, in order; when
    `frames` is, append each request's response frame instead."""
    _apply(data, sessions, max_sessions, batch, replies, frames, NULL)


def apply_runs(dict data, dict sessions, Py_ssize_t max_sessions, bytes batch, list counts):
    """Apply a batch entry as `apply_batch` does and return its response frames joined per run:
    one bytes for each count in `counts`, holding the responses of the next that many requests,
    in order. Requests past the counts' sum are applied and not answered; a count the batch
    does not fill gets the responses left (b"" for none). ValueError, with nothing applied,
    for a count that is negative or above sys.maxsize."""
    cdef _Out out
    cdef list joined = []
    cdef Py_ssize_t i = 0, start = 0, stop, n
    for count in counts:
        if not 0 <= count <= PY_SSIZE_T_MAX:
            raise ValueError(f"apply_runs: bad count {count!r}")
    out.data = NULL
    out.ends = NULL
    out.size = out.cap = out.n = out.ncap = 0
    try:
        _apply(data, sessions, max_sessions, batch, None, None, &out)
        for count in counts:
            n = count
            if n > out.n - i:
                n = out.n - i
            stop = out.ends[i + n - 1] if n else start
            joined.append(PyBytes_FromStringAndSize(<const char*>out.data + start, stop - start))
            i += n
            start = stop
    finally:
        free(out.data)
        free(out.ends)
    return joined


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _apply(dict data, dict sessions, Py_ssize_t max_sessions, bytes batch, list replies, list frames,
                _Out* out) except -1:
    cdef Py_ssize_t end = PyBytes_GET_SIZE(batch)
    cdef const uint8_t* buf = <const uint8_t*>PyBytes_AS_STRING(batch)
    cdef Py_ssize_t pos = 1, kpos, vpos
    cdef const uint8_t* h
    cdef uint32_t length, rid, vlen, elen
    cdef uint16_t klen
    cdef int op
    cdef uint64_t cid, seq, ack, floor = 0, last_cid = 0, s
    cdef bint have_session = False
    cdef list session = None
    cdef dict results = None
    cdef object result, pyseq
    if end < 1 or buf[0] != 1:  # BATCH_TAG
        return 0
    while pos < end:
        if end - pos < HEAD:
            raise struct.error(f"unpack_from requires a buffer of at least {pos + HEAD} bytes for "
                               f"unpacking {HEAD} bytes at offset {pos} (actual buffer size is {end})")
        h = buf + pos
        length = u32(h)
        op = h[4]
        rid = u32(h + 5)
        cid = u64(h + 9)
        seq = u64(h + 17)
        ack = u64(h + 25)
        klen = u16(h + 33)
        vlen = u32(h + 35)
        elen = u32(h + 39)
        kpos = pos + HEAD
        pos += 4 + <Py_ssize_t>length
        if not have_session or cid != last_cid:  # a batch holds runs of one client's requests
            if have_session:
                session[0] = floor
            have_session = True
            last_cid = cid
            session = sessions.pop(cid, None)
            if session is None:
                session = [0, {}]
                if len(sessions) >= max_sessions:
                    del sessions[next(iter(sessions))]
            sessions[cid] = session  # most recently active last
            floor = session[0]
            results = session[1]
        if seq < floor:
            result = _STALE
        else:
            pyseq = seq
            result = results.get(pyseq)
            if result is None:
                vpos = kpos + klen
                if op == _PUT:
                    data[_slice(buf, end, kpos, klen)] = _slice(buf, end, vpos, vlen)
                    result = _OK
                else:
                    result = _apply_other(data, op, _slice(buf, end, kpos, klen), buf, end, vpos, vlen, elen)
                results[pyseq] = result
        if ack > floor:  # forget the results the client acknowledged (seq < ack)
            if ack - floor <= 8 or ack - floor <= <uint64_t>len(results):
                while floor < ack:
                    results.pop(floor, None)
                    floor += 1
            else:  # a large jump: filtering is cheaper than walking the gap
                results = {k: r for k, r in results.items() if k >= ack}
                session[1] = results
                floor = ack
        if out != NULL:
            _out_frame(out, rid, result)
        elif frames is not None:
            frames.append(_frame(rid, result))
        elif replies is not None:
            replies.append((cid, seq, result))
    if have_session:
        session[0] = floor
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
def scan_writes(bytes data, Py_ssize_t pos, Py_ssize_t max_request):
    """(end, count): the run of complete, well-formed write frames with a non-zero client id
    that starts at `pos` in `data` ends at `end` and holds `count` of them. It stops at the
    first frame that is anything else, or incomplete; that one is the caller's to judge."""
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
    cdef const uint8_t* buf = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef const uint8_t* h
    cdef Py_ssize_t count = 0, frame_end
    cdef uint32_t length, elen
    cdef uint64_t expected
    cdef int op
    if pos < 0:
        pos = 0
    while end - pos >= HEAD:
        h = buf + pos
        length = u32(h)
        op = h[4]
        if op != _PUT and op != _DELETE and op != _APPEND and op != _CAS:
            break
        if u64(h + 9) == 0 or <Py_ssize_t>length > max_request:
            break
        elen = u32(h + 39)
        expected = <uint64_t>(HEAD - 4) + u16(h + 33) + u32(h + 35) + (0 if elen == NO_VALUE else elen)
        if <uint64_t>length != expected:
            break
        frame_end = pos + 4 + <Py_ssize_t>length
        if frame_end > end:
            break
        pos = frame_end
        count += 1
    return pos, count


# -- snapshots ---------------------------------------------------------------------------------

cdef extern from "<stdint.h>":
    const uint64_t UINT64_MAX

cdef extern from "Python.h":
    # The macros on borrowed PyObject* (no reference counting in the dict walks)
    bint _bytes_check "PyBytes_Check"(PyObject* o) nogil
    char* _bytes_data "PyBytes_AS_STRING"(PyObject* o) nogil
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE"(PyObject* o) nogil
    bint _long_check "PyLong_Check"(PyObject* o) nogil
    bint _list_check "PyList_Check"(PyObject* o) nogil
    Py_ssize_t _list_size "PyList_GET_SIZE"(PyObject* o) nogil
    PyObject* _list_item "PyList_GET_ITEM"(PyObject* o, Py_ssize_t i) nogil
    bint _tuple_check "PyTuple_Check"(PyObject* o) nogil
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE"(PyObject* o) nogil
    PyObject* _tuple_item "PyTuple_GET_ITEM"(PyObject* o, Py_ssize_t i) nogil
    bint _dict_check "PyDict_Check"(PyObject* o) nogil
    Py_ssize_t _dict_size "PyDict_GET_SIZE"(PyObject* o) nogil
    bint _dict_next "PyDict_Next"(PyObject* p, Py_ssize_t* ppos, PyObject** pkey, PyObject** pvalue) nogil
    unsigned long long _as_u64 "PyLong_AsUnsignedLongLong"(PyObject* o) nogil
    PyObject* _err_occurred "PyErr_Occurred"() nogil
    void _err_clear "PyErr_Clear"() nogil

cdef enum:
    SNAPSHOT_HEAD = 21  # <4sBQQ: magic, version, #keys, #sessions
    SESSION_HEAD = 20  # <QQI: client id, floor, #results
    RESULT_HEAD = 13  # <QBI: seq, status, body length


cdef uint64_t _uint(PyObject* value, uint64_t maximum, str what) except? 0:
    """The int at `value`; TypeError if it is not an int, ValueError if not in [0, maximum]."""
    cdef unsigned long long v
    if not _long_check(value):
        raise TypeError(f"snapshot: {what} must be an int, not {type(<object>value).__name__}")
    v = _as_u64(value)  # OverflowError for a negative or too large int
    if v == <unsigned long long>-1 and _err_occurred() != NULL:
        _err_clear()
        raise ValueError(f"snapshot: {what} {<object>value} out of range")
    if v > maximum:
        raise ValueError(f"snapshot: {what} {<object>value} out of range")
    return v


cdef Py_ssize_t _add(Py_ssize_t total, Py_ssize_t n) except -1:
    if n > PY_SSIZE_T_MAX - total:
        raise OverflowError("snapshot: too large")
    return total + n


cdef Py_ssize_t _sessions(PyObject* sessions, uint8_t* p, Py_ssize_t end) except -1:
    """The bytes the sessions take in a snapshot, checking them as `_apply_py` does, in order;
    with `p`, also written there (RuntimeError rather than a write past `end`, which only a
    finaliser run by the allocation and changing the sessions could cause)."""
    cdef Py_ssize_t pos = 0, rpos, at = 0, blen
    cdef uint64_t c, floor, q, status
    cdef PyObject* cid
    cdef PyObject* session
    cdef PyObject* results
    cdef PyObject* seq
    cdef PyObject* result
    cdef PyObject* body
    while _dict_next(sessions, &pos, &cid, &session):
        c = _uint(cid, UINT64_MAX, "client id")
        if not _list_check(session):
            raise TypeError(f"snapshot: session {<object>cid} must be a list, not {type(<object>session).__name__}")
        if _list_size(session) != 2:
            raise ValueError(f"snapshot: session {<object>cid} must be [floor, results], "
                             f"not {_list_size(session)} items")
        floor = _uint(_list_item(session, 0), UINT64_MAX, "session floor")
        results = _list_item(session, 1)
        if not _dict_check(results):
            raise TypeError(f"snapshot: session {<object>cid} results must be a dict, "
                            f"not {type(<object>results).__name__}")
        if _dict_size(results) > UINT32_MAX:
            raise ValueError(f"snapshot: session {<object>cid} has too many results")
        if p != NULL:
            if end - at < SESSION_HEAD:
                raise RuntimeError("snapshot: the store changed while it was written")
            put_u64(p + at, c)
            put_u64(p + at + 8, floor)
            put_u32(p + at + 16, <uint32_t>_dict_size(results))
        at = _add(at, SESSION_HEAD)
        rpos = 0
        while _dict_next(results, &rpos, &seq, &result):
            q = _uint(seq, UINT64_MAX, "result seq")
            if not _tuple_check(result):
                raise TypeError(f"snapshot: result {<object>seq} must be a tuple, not {type(<object>result).__name__}")
            if _tuple_size(result) != 2:
                raise ValueError(f"snapshot: result {<object>seq} must be (status, body), "
                                 f"not {_tuple_size(result)} items")
            status = _uint(_tuple_item(result, 0), 0xFF, "result status")
            body = _tuple_item(result, 1)
            if not _bytes_check(body):
                raise TypeError(f"snapshot: a result body must be bytes, not {type(<object>body).__name__}")
            blen = _bytes_size(body)
            if blen > UINT32_MAX:
                raise ValueError("snapshot: a result body of 4 GiB or more")
            if p != NULL:
                if end - at < RESULT_HEAD or end - at - RESULT_HEAD < blen:
                    raise RuntimeError("snapshot: the store changed while it was written")
                put_u64(p + at, q)
                p[at + 8] = <uint8_t>status
                put_u32(p + at + 9, <uint32_t>blen)
                memcpy(p + at + RESULT_HEAD, _bytes_data(body), blen)
            at = _add(at, RESULT_HEAD)
            at = _add(at, blen)
    return at


@cython.boundscheck(False)
@cython.wraparound(False)
def snapshot_state(data, sessions):
    """`KVStore.snapshot`: `data` (bytes -> bytes) and `sessions` (client id -> [floor,
    {seq: (status, body)}]) in the snapshot format (see `raftfast.kv.store`), written into one
    preallocated bytes after a sizing pass. The same bytes and errors as `_apply_py`."""
    cdef PyObject* d
    cdef PyObject* s
    cdef PyObject* k
    cdef PyObject* v
    cdef PyObject* bad_value = NULL
    cdef Py_ssize_t pos = 0, i, n, klen, vlen, kbytes = 0, vbytes = 0, total, at
    cdef Py_ssize_t kat, vat, kend, vend
    cdef bint too_long = False
    cdef bytes out
    cdef uint8_t* p
    if not isinstance(data, dict):
        raise TypeError(f"snapshot: data must be a dict, not {type(data).__name__}")
    if not isinstance(sessions, dict):
        raise TypeError(f"snapshot: sessions must be a dict, not {type(sessions).__name__}")
    d = <PyObject*>data
    s = <PyObject*>sessions
    n = _dict_size(d)
    # sizing pass: a key that is not bytes is reported before a value that is not, and both
    # before a key or value that is too long (as the pure twin checks them)
    while _dict_next(d, &pos, &k, &v):
        if not _bytes_check(k):
            raise TypeError(f"snapshot: a key must be bytes, not {type(<object>k).__name__}")
        if not _bytes_check(v):
            if bad_value == NULL:
                bad_value = v
            continue
        klen = _bytes_size(k)
        vlen = _bytes_size(v)
        if klen > UINT32_MAX or vlen > UINT32_MAX:
            too_long = True
        kbytes = _add(kbytes, klen)
        vbytes = _add(vbytes, vlen)
    if bad_value != NULL:
        raise TypeError(f"snapshot: a value must be bytes, not {type(<object>bad_value).__name__}")
    if too_long:
        raise ValueError("snapshot: a key or value of 4 GiB or more")
    if n > (PY_SSIZE_T_MAX - SNAPSHOT_HEAD) // 8:
        raise OverflowError("snapshot: too large")
    total = _add(_add(_add(SNAPSHOT_HEAD + 8 * n, kbytes), vbytes), _sessions(s, NULL, 0))

    # writing pass: only a finaliser run by the allocation could change the dicts since sizing
    out = PyBytes_FromStringAndSize(NULL, total)
    p = <uint8_t*>PyBytes_AS_STRING(out)
    memcpy(p, b"RFKV", 4)
    p[4] = 1
    put_u64(p + 5, <uint64_t>n)
    put_u64(p + 13, <uint64_t>_dict_size(s))
    kat = SNAPSHOT_HEAD + 8 * n
    vat = kat + kbytes
    kend = vat
    vend = vat + vbytes
    pos = 0
    i = 0
    while _dict_next(d, &pos, &k, &v):
        if i == n or not _bytes_check(k) or not _bytes_check(v):
            raise RuntimeError("snapshot: the store changed while it was written")
        klen = _bytes_size(k)
        vlen = _bytes_size(v)
        if klen > kend - kat or vlen > vend - vat:
            raise RuntimeError("snapshot: the store changed while it was written")
        put_u32(p + SNAPSHOT_HEAD + 4 * i, <uint32_t>klen)
        put_u32(p + SNAPSHOT_HEAD + 4 * (n + i), <uint32_t>vlen)
        memcpy(p + kat, _bytes_data(k), klen)
        memcpy(p + vat, _bytes_data(v), vlen)
        kat += klen
        vat += vlen
        i += 1
    at = vend + _sessions(s, p + vend, total - vend)
    if i != n or kat != kend or vat != vend or at != total:  # a safety net, as above
        raise RuntimeError("snapshot: the store changed while it was written")
    return out


cdef object _truncated(Py_ssize_t pos, Py_ssize_t size, Py_ssize_t end):
    """The pure twin's error for a head that `struct.unpack_from` finds cut short."""
    return SnapshotFormatError(f"truncated snapshot: unpack_from requires a buffer of at least {pos + size} "
                               f"bytes for unpacking {size} bytes at offset {pos} (actual buffer size is {end})")


@cython.boundscheck(False)
@cython.wraparound(False)
def restore_state(snapshot):
    """`KVStore.restore` of a non-empty snapshot: (data, sessions) as `snapshot_state` took
    them, in the snapshot's order; a key, client id or seq written twice keeps its first place
    and its last value. The same results and errors as `_apply_py`.

    The bytes come off the network: every count and length is checked against what is left of
    the buffer before anything is read or allocated for it."""
    cdef const uint8_t* buf
    cdef Py_ssize_t end, pos, n, i, lat, kat, vat, klen, vlen
    cdef uint64_t nkeys, nsessions, c, nresults, r, cid, floor, seq, left, total, kbytes = 0
    cdef uint32_t size
    cdef uint8_t status
    cdef dict data = {}
    cdef dict sessions = {}
    cdef dict results
    if not isinstance(snapshot, bytes):
        raise TypeError(f"restore: the snapshot must be bytes, not {type(snapshot).__name__}")
    buf = <const uint8_t*>PyBytes_AS_STRING(snapshot)
    end = PyBytes_GET_SIZE(snapshot)
    if end < SNAPSHOT_HEAD:
        raise _truncated(0, SNAPSHOT_HEAD, end)
    if memcmp(buf, b"RFKV", 4) != 0 or buf[4] != 1:
        raise SnapshotFormatError("not a version 1 KV snapshot")
    nkeys = u64(buf + 5)
    nsessions = u64(buf + 13)
    pos = SNAPSHOT_HEAD
    if nkeys > <uint64_t>((end - pos) // 8):  # 8 * nkeys > what is left, without overflow
        raise SnapshotFormatError("truncated key table")
    n = <Py_ssize_t>nkeys
    lat = pos
    pos += 8 * n
    # the keys' total, then the values': checked as they grow, so they cannot overflow
    left = <uint64_t>(end - pos)
    total = 0
    for i in range(2 * n):
        if i == n:
            kbytes = total
        total += u32(buf + lat + 4 * i)
        if total > left:
            raise SnapshotFormatError("truncated keys and values")
    kat = pos
    vat = pos + <Py_ssize_t>kbytes
    pos += <Py_ssize_t>total
    for i in range(n):
        klen = u32(buf + lat + 4 * i)
        vlen = u32(buf + lat + 4 * (n + i))
        data[PyBytes_FromStringAndSize(<const char*>buf + kat, klen)] = \
            PyBytes_FromStringAndSize(<const char*>buf + vat, vlen)
        kat += klen
        vat += vlen
    # every session takes at least its head: a count beyond the bytes left ends at the first
    # missing head, as in the pure twin
    c = 0
    while c < nsessions:
        if end - pos < SESSION_HEAD:
            raise _truncated(pos, SESSION_HEAD, end)
        cid = u64(buf + pos)
        floor = u64(buf + pos + 8)
        nresults = u32(buf + pos + 16)
        pos += SESSION_HEAD
        results = {}
        r = 0
        while r < nresults:
            if end - pos < RESULT_HEAD:
                raise _truncated(pos, RESULT_HEAD, end)
            seq = u64(buf + pos)
            status = buf[pos + 8]
            size = u32(buf + pos + 9)
            pos += RESULT_HEAD
            if size > <uint64_t>(end - pos):
                raise SnapshotFormatError("truncated session result")
            results[seq] = (status, PyBytes_FromStringAndSize(<const char*>buf + pos, size))
            pos += size
            r += 1
        sessions[cid] = [floor, results]
        c += 1
    if pos != end:
        raise SnapshotFormatError(f"{end - pos} trailing bytes")
    return data, sessions
