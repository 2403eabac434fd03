# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled codec kernel: the twin of `_codec_py`, same names, signatures, bytes and errors.

The layout is docs/wire-format.md and the constants come from `_format`. Encoding validates
the message and sizes it exactly in a first pass, then writes into one freshly allocated bytes
object through a cursor (no joins, no intermediate parts). Decoding reads straight from the
input's buffer and, like the pure twin, checks every count and length against the bytes still
unread before allocating anything from it; garbage raises EncodingError and nothing else.
AppendEntries entries decode into the live `EntryBatch` (built from a terms list, a kinds
bytes and command slices), through its Python-level constructor only.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset

from raftfast.codec._format import MAX_FRAME, MAX_VALUE, MESSAGE_CODES, MIN_FRAME, VERSION
from raftfast.errors import EncodingError
from raftfast.log import _entries_py
from raftfast.log._entries import EntryBatch
from raftfast.messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    PreVote,
    PreVoteReply,
    ReadProbe,
    ReadProbeReply,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftfast.types import EntryKind, Membership, Snapshot

__all__ = ["FrameReader", "decode", "encode", "encode_frame"]


cdef extern from "Python.h":
    # Raises TypeError for a non-integer (after __index__); sets *overflow, not an error,
    # when the value does not fit a long long.
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1
    PyObject* PyList_GET_ITEM(object lst, Py_ssize_t i)
    Py_ssize_t PyList_GET_SIZE(object lst)


cdef extern from *:
    """
    /* Little-endian fixed-width integers at unaligned addresses. */
    static CYTHON_INLINE char *rf_put_u64(char *p, unsigned long long v) {
    #if PY_LITTLE_ENDIAN
        memcpy(p, &v, 8);
    #else
        int i; for (i = 0; i < 8; i++) p[i] = (char)(v >> (8 * i));
    #endif
        return p + 8;
    }
    static CYTHON_INLINE char *rf_put_u32(char *p, unsigned long v) {
    #if PY_LITTLE_ENDIAN
        uint32_t w = (uint32_t)v; memcpy(p, &w, 4);
    #else
        int i; for (i = 0; i < 4; i++) p[i] = (char)(v >> (8 * i));
    #endif
        return p + 4;
    }
    static CYTHON_INLINE unsigned long long rf_get_u64(const unsigned char *p) {
    #if PY_LITTLE_ENDIAN
        unsigned long long v; memcpy(&v, p, 8); return v;
    #else
        unsigned long long v = 0; int i; for (i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v;
    #endif
    }
    static CYTHON_INLINE unsigned long rf_get_u32(const unsigned char *p) {
    #if PY_LITTLE_ENDIAN
        uint32_t v; memcpy(&v, p, 4); return v;
    #else
        return (unsigned long)p[0] | ((unsigned long)p[1] << 8) | ((unsigned long)p[2] << 16)
            | ((unsigned long)p[3] << 24);
    #endif
    }
    """
    char* rf_put_u64(char* p, unsigned long long v) nogil
    char* rf_put_u32(char* p, unsigned long v) nogil
    unsigned long long rf_get_u64(const unsigned char* p) nogil
    unsigned long rf_get_u32(const unsigned char* p) nogil


# -- constants -----------------------------------------------------------------------------------

cdef uint64_t _MAX = MAX_VALUE
cdef unsigned char _VERSION = VERSION
cdef uint64_t _MIN_FRAME = MIN_FRAME
cdef uint64_t _U32 = 0xFFFFFFFF
cdef tuple _KINDS = (EntryKind.NORMAL, EntryKind.CONFIG, EntryKind.NOOP)
cdef int _MAX_KIND = 2
cdef object _EntryBatch = EntryBatch
cdef object _PyEntryBatch = _entries_py.EntryBatch
cdef object _Membership = Membership
cdef object _Snapshot = Snapshot
cdef object _EncodingError = EncodingError

# Sizes from docs/wire-format.md.
cdef enum:
    PRE_VOTE_SIZE = 34
    REQUEST_VOTE_SIZE = 35
    VOTE_REPLY_SIZE = 19
    APPEND_HEAD_SIZE = 46
    ENTRY_HEAD_SIZE = 13
    APPEND_REPLY_SIZE = 43
    SNAPSHOT_HEAD_SIZE = 42
    TRIPLE_SIZE = 26
    TIMEOUT_NOW_SIZE = 18
    LENGTH_SIZE = 4
    ID_SIZE = 8
    SHRINK_ABOVE = 1048576  # FrameReader gives back an empty buffer above 1 MiB (a literal:
    #                         an expression here trips Cython 3.3 with overflowcheck on)

# The layout of each message class; the type codes themselves come from _format.
cdef enum Shape:
    S_NONE = 0
    S_PRE_VOTE
    S_PRE_VOTE_REPLY
    S_REQUEST_VOTE
    S_REQUEST_VOTE_REPLY
    S_APPEND
    S_APPEND_REPLY
    S_INSTALL
    S_INSTALL_REPLY
    S_TIMEOUT_NOW
    S_READ_PROBE
    S_READ_PROBE_REPLY

_SHAPES = {
    PreVote: S_PRE_VOTE,
    PreVoteReply: S_PRE_VOTE_REPLY,
    RequestVote: S_REQUEST_VOTE,
    RequestVoteReply: S_REQUEST_VOTE_REPLY,
    AppendEntries: S_APPEND,
    AppendEntriesReply: S_APPEND_REPLY,
    InstallSnapshot: S_INSTALL,
    InstallSnapshotReply: S_INSTALL_REPLY,
    TimeoutNow: S_TIMEOUT_NOW,
    ReadProbe: S_READ_PROBE,
    ReadProbeReply: S_READ_PROBE_REPLY,
}
if set(_SHAPES) != set(MESSAGE_CODES):
    raise ImportError("raftfast.codec._codec_c does not know every message in _format.MESSAGE_CODES")

# encode: exact class -> shape * 256 + type code. decode: type code -> shape and class.
cdef dict _ENCODE_KEY = {cls: _SHAPES[cls] * 256 + code for cls, code in MESSAGE_CODES.items()}
cdef int _SHAPE_OF_CODE[256]
cdef list _CLASS_OF_CODE = [None] * 256
for _code in range(256):
    _SHAPE_OF_CODE[_code] = S_NONE
for _cls, _code in MESSAGE_CODES.items():
    _SHAPE_OF_CODE[_code] = _SHAPES[_cls]
    _CLASS_OF_CODE[_code] = _cls
del _cls, _code


# -- shared helpers ------------------------------------------------------------------------------

cdef inline int _u63(object value, uint64_t* out) except -1:
    """1 (and *out) for an integer in 0..2**63-1, 0 for an integer outside it; TypeError for
    anything that is not an integer, as `>>` raises in the pure twin."""
    cdef int overflow = 0
    cdef long long x = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or x < 0:
        return 0
    out[0] = <uint64_t>x
    return 1


cdef inline int _is_index(object got, uint64_t expected) except -1:
    """`got == expected`, with Python's meaning of == for anything but a plain int."""
    cdef int overflow = 0
    cdef long long x
    if PyLong_CheckExact(got) and expected <= _MAX:
        x = PyLong_AsLongLongAndOverflow(got, &overflow)
        return not overflow and x >= 0 and <uint64_t>x == expected
    return not (got != expected)


cdef inline object _as_bytes(object value, str field):
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{field} must be bytes, got {type(value).__name__}")


cdef object _out_of_range(object message, str fields=""):
    # `fields` stands in for the repr of messages that carry payloads, which may be huge.
    return _EncodingError(
        f"encode {type(message).__name__}",
        "terms, indexes and sequence numbers must be in 0..2**63-1, node ids in 1..2**63-1, "
        f"flags bool: {fields or repr(message)}",
    )


cdef object _bad_entry(Py_ssize_t position, uint64_t index, object got_index, object term, object kind):
    return _EncodingError(
        "encode AppendEntries",
        f"entry {position} must have index {index}, a term in 0..2**63-1 and an "
        f"EntryKind; got index={got_index!r} term={term!r} kind={kind!r}",
    )


cdef inline int _flag(object value, uint64_t* out) except -1:
    if type(value) is not bool:
        return 0
    out[0] = 1 if value is True else 0
    return 1


cdef object _wrong_field(object message, object exc):
    # A field of the wrong type, or a count or length too wide for its slot.
    return _EncodingError(f"encode {type(message).__name__}", str(exc))


cdef inline int _frame_check(Py_ssize_t size, object max_frame) except -1:
    if size > max_frame:
        raise _EncodingError(
            "encode_frame", f"{size}-byte payload exceeds the {max_frame}-byte frame limit"
        )
    return 0


cdef inline bytes _allocate(Py_ssize_t size, bint framed, char** cursor):
    """A bytes object for a `size`-byte message (behind its length when framed), with *cursor
    at the message's first byte."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size + (LENGTH_SIZE if framed else 0))
    cdef char* p = PyBytes_AS_STRING(out)
    if framed:
        p = rf_put_u32(p, <unsigned long>size)
    cursor[0] = p
    return out


# -- encode --------------------------------------------------------------------------------------

cdef bytes _encode(object message, bint framed, object max_frame):
    cdef PyObject* key = PyDict_GetItem(_ENCODE_KEY, type(message))
    cdef long k
    if key is NULL:
        raise _EncodingError("encode", f"not a raftfast message: {type(message).__name__}")
    k = <long><object>key
    # Each encoder turns what the pure twin's struct calls would raise (TypeError, ValueError,
    # AttributeError, OverflowError) into EncodingError while it checks the message, but not
    # what the frame-limit comparison raises, as in the pure twin.
    if k >> 8 == S_APPEND:
        return _encode_append(message, k & 255, framed, max_frame)
    if k >> 8 == S_INSTALL:
        return _encode_install(message, k & 255, framed, max_frame)
    return _encode_fixed(message, k >> 8, k & 255, framed, max_frame)


cdef bytes _encode_fixed(object m, int shape, int code, bint framed, object max_frame):
    # f: the u64 fields in wire order; flag: the u8 flag, written after f[:flag_at].
    cdef uint64_t f[6]
    cdef uint64_t flag = 0
    cdef int n = 0, flag_at = -1, ok = 1, node = 1
    cdef Py_ssize_t size
    cdef char* p
    cdef bytes out
    cdef int i
    memset(f, 0, sizeof(f))
    try:
        if shape == S_PRE_VOTE or shape == S_REQUEST_VOTE:
            term, candidate, index, last_term = m.term, m.candidate, m.last_log_index, m.last_log_term
            ok = _u63(term, &f[0]) & _u63(candidate, &f[1]) & _u63(index, &f[2]) & _u63(last_term, &f[3])
            node = f[1] != 0
            n = 4
            size = PRE_VOTE_SIZE
            if shape == S_REQUEST_VOTE:
                size = REQUEST_VOTE_SIZE
                flag_at = 4
                if ok and node:
                    ok = _flag(m.force, &flag)
        elif shape == S_PRE_VOTE_REPLY or shape == S_REQUEST_VOTE_REPLY:
            term, sender = m.term, m.from_
            ok = _u63(term, &f[0]) & _u63(sender, &f[1])
            node = f[1] != 0
            n = 2
            flag_at = 1
            size = VOTE_REPLY_SIZE
            if ok and node:
                ok = _flag(m.vote_granted, &flag)
        elif shape == S_APPEND_REPLY:
            term, sender, match, c_index, c_term = (
                m.term, m.from_, m.match_index, m.conflict_index, m.conflict_term
            )
            ok = (_u63(term, &f[0]) & _u63(sender, &f[1]) & _u63(match, &f[2]) & _u63(c_index, &f[3])
                  & _u63(c_term, &f[4]))
            node = f[1] != 0
            n = 5
            flag_at = 1
            size = APPEND_REPLY_SIZE
            if ok and node:
                ok = _flag(m.success, &flag)
        elif shape == S_TIMEOUT_NOW:
            term, leader = m.term, m.leader
            ok = _u63(term, &f[0]) & _u63(leader, &f[1])
            node = f[1] != 0
            n = 2
            size = TIMEOUT_NOW_SIZE
        else:
            if shape == S_INSTALL_REPLY:
                term, sender, value = m.term, m.from_, m.last_index
            elif shape == S_READ_PROBE:
                term, sender, value = m.term, m.leader, m.seq
            else:  # S_READ_PROBE_REPLY
                term, sender, value = m.term, m.from_, m.seq
            ok = _u63(term, &f[0]) & _u63(sender, &f[1]) & _u63(value, &f[2])
            node = f[1] != 0
            n = 3
            size = TRIPLE_SIZE
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise _wrong_field(m, exc) from None
    if not ok or not node:
        raise _out_of_range(m)
    if framed:
        _frame_check(size, max_frame)
    out = _allocate(size, framed, &p)
    p[0] = <char>_VERSION
    p[1] = <char>code
    p += 2
    for i in range(n):
        if i == flag_at:
            p[0] = <char>flag
            p += 1
        p = rf_put_u64(p, f[i])
    if flag_at == n:
        p[0] = <char>flag
    return out


cdef bytes _encode_append(object m, int code, bint framed, object max_frame):
    cdef uint64_t head[5]
    cdef uint64_t* terms = NULL
    cdef uint8_t* kinds = NULL
    cdef list commands
    cdef Py_ssize_t count = 0, body = 0, size, i, length
    cdef PyObject* command
    cdef char* p
    cdef bytes out
    cdef int ok
    cdef Py_ssize_t room  # bytes still unwritten (an integer: no pointer arithmetic to check)
    memset(head, 0, sizeof(head))
    try:
        try:
            term, leader, prev, prev_term, commit = (
                m.term, m.leader, m.prev_log_index, m.prev_log_term, m.leader_commit
            )
            ok = (_u63(term, &head[0]) & _u63(leader, &head[1]) & _u63(prev, &head[2])
                  & _u63(prev_term, &head[3]) & _u63(commit, &head[4]))
            if not ok or head[1] == 0:
                raise _out_of_range(
                    m, f"term={term!r} leader={leader!r} prev_log_index={prev!r} "
                    f"prev_log_term={prev_term!r} leader_commit={commit!r}"
                )
            entries = m.entries
            if type(entries) is _EntryBatch or type(entries) is _PyEntryBatch:
                commands = _plan_batch(entries, head[2], &terms, &kinds, &count, &body)
            else:
                commands = _plan_entries(entries, head[2], &terms, &kinds, &count, &body)
            if head[2] + <uint64_t>count > _MAX:
                raise _EncodingError(
                    "encode AppendEntries",
                    f"last entry index {head[2] + <uint64_t>count} exceeds 2**63-1",
                )
            if <uint64_t>count > _U32:
                raise OverflowError(f"{count} entries do not fit the u32 count")
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise _wrong_field(m, exc) from None
        size = APPEND_HEAD_SIZE + body
        if framed:
            _frame_check(size, max_frame)
        out = _allocate(size, framed, &p)
        room = body
        p[0] = <char>_VERSION
        p[1] = <char>code
        p += 2
        for i in range(5):
            p = rf_put_u64(p, head[i])
        p = rf_put_u32(p, <unsigned long>count)
        # `commands` may be the batch's own list. Terms and kinds were copied out, and nothing
        # above should run Python code that touches the list, but the writes are bounded by
        # what was sized whatever happens.
        if PyList_GET_SIZE(commands) != count:
            raise RuntimeError("encode AppendEntries: the entries changed while being encoded")
        for i in range(count):
            command = PyList_GET_ITEM(commands, i)
            if type(<object>command) is not bytes:
                raise RuntimeError("encode AppendEntries: the entries changed while being encoded")
            length = PyBytes_GET_SIZE(<object>command)
            if room < ENTRY_HEAD_SIZE + length:
                raise RuntimeError("encode AppendEntries: the entries changed while being encoded")
            room -= ENTRY_HEAD_SIZE + length
            p = rf_put_u64(p, terms[i])
            p[0] = <char>kinds[i]
            p = rf_put_u32(p + 1, <unsigned long>length)
            memcpy(p, PyBytes_AS_STRING(<object>command), length)
            p += length
        if room:
            raise RuntimeError("encode AppendEntries: the entries changed while being encoded")
        return out
    finally:
        PyMem_Free(terms)
        PyMem_Free(kinds)


cdef int _columns(Py_ssize_t count, uint64_t** terms, uint8_t** kinds) except -1:
    terms[0] = <uint64_t*>PyMem_Malloc(max(count, 1) * sizeof(uint64_t))
    kinds[0] = <uint8_t*>PyMem_Malloc(max(count, 1) * sizeof(uint8_t))
    if terms[0] == NULL or kinds[0] == NULL:
        raise MemoryError()
    return 0


cdef list _plan_entries(object entries, uint64_t prev, uint64_t** terms, uint8_t** kinds,
                        Py_ssize_t* count, Py_ssize_t* body):
    """Any sequence of LogEntry, checked entry by entry in the pure twin's order: fills the
    term and kind columns and returns the commands as bytes."""
    cdef Py_ssize_t n, i, length
    cdef uint64_t index = prev, term_value = 0
    cdef long long kind_value
    cdef int overflow = 0
    cdef list commands
    if type(entries) is not list and type(entries) is not tuple:
        entries = list(entries)
    n = len(entries)
    _columns(n, terms, kinds)
    commands = PyList_New(n)
    for i in range(n):
        entry = entries[i]
        index += 1
        entry_term, kind, command = entry.term, entry.kind, entry.command
        # Indexes are not sent: the receiver numbers entries from prev_log_index + 1.
        got = entry.index
        if not _is_index(got, index) or not _u63(entry_term, &term_value):
            raise _bad_entry(i, index, got, entry_term, kind)
        kind_value = PyLong_AsLongLongAndOverflow(kind, &overflow)
        if overflow or kind_value < 0 or kind_value > _MAX_KIND:
            raise _bad_entry(i, index, got, entry_term, kind)
        command = _as_bytes(command, "command")
        length = PyBytes_GET_SIZE(command)
        if <uint64_t>length > _U32:
            raise OverflowError(f"a {length}-byte command does not fit the u32 length")
        terms[0][i] = term_value
        kinds[0][i] = <uint8_t>kind_value
        Py_INCREF(command)
        PyList_SET_ITEM(commands, i, command)
        body[0] += ENTRY_HEAD_SIZE + length
    count[0] = n
    return commands


cdef list _plan_batch(object batch, uint64_t prev, uint64_t** terms, uint8_t** kinds,
                      Py_ssize_t* count, Py_ssize_t* body):
    """An EntryBatch, read column by column: the same checks, in the same order, as its
    entries would get from `_plan_entries`, without building a LogEntry per entry."""
    cdef Py_ssize_t n, i, length
    cdef uint64_t term_value = 0
    cdef const unsigned char* kind_bytes
    cdef list commands
    cdef list out
    terms_column, kinds_column, commands_column = batch.terms, batch.kinds, batch.commands
    if type(terms_column) is not list:
        terms_column = list(terms_column)
    if type(kinds_column) is not bytes:
        kinds_column = bytes(kinds_column)
    if type(commands_column) is not list:
        commands_column = list(commands_column)
    commands = commands_column
    n = len(commands)
    if len(terms_column) != n or len(kinds_column) != n:
        raise _EncodingError(
            "encode AppendEntries",
            f"EntryBatch columns differ in length: {len(terms_column)} terms, "
            f"{len(kinds_column)} kinds, {n} commands",
        )
    count[0] = 0
    _columns(n, terms, kinds)
    if not n:
        return commands
    first = batch.first_index
    kind_bytes = <const unsigned char*>PyBytes_AS_STRING(kinds_column)
    out = commands
    first_ok = _is_index(first, prev + 1)
    for i in range(n):
        entry_term = <object>PyList_GET_ITEM(terms_column, i)
        if (i == 0 and not first_ok) or not _u63(entry_term, &term_value) or kind_bytes[i] > _MAX_KIND:
            kind = kind_bytes[i]
            raise _bad_entry(i, prev + 1 + i, first + i, entry_term, _KINDS[kind] if kind <= _MAX_KIND else kind)
        command = <object>PyList_GET_ITEM(commands, i)
        if type(command) is not bytes:
            if out is commands:
                out = list(commands)  # the batch's own list stays as it is
            command = _as_bytes(command, "command")
            out[i] = command
        length = PyBytes_GET_SIZE(command)
        if <uint64_t>length > _U32:
            raise OverflowError(f"a {length}-byte command does not fit the u32 length")
        terms[0][i] = term_value
        kinds[0][i] = kind_bytes[i]
        body[0] += ENTRY_HEAD_SIZE + length
    count[0] = n
    return out


cdef int _members_ok(object ids) except -1:
    """Canonical ids: each in 1..2**63-1 and strictly increasing."""
    cdef uint64_t previous = 0, value = 0
    for node in ids:
        if not _u63(node, &value) or value <= previous:
            return 0
        previous = value
    return 1


cdef int _disjoint(tuple a, tuple b) except -1:
    """Two strictly increasing tuples of ints share no element (a merge, not a set)."""
    cdef Py_ssize_t i = 0, j = 0, na = len(a), nb = len(b)
    cdef uint64_t x = 0, y = 0
    while i < na and j < nb:
        _u63(a[i], &x)
        _u63(b[j], &y)
        if x == y:
            return 0
        if x < y:
            i += 1
        else:
            j += 1
    return 1


cdef bytes _encode_install(object m, int code, bint framed, object max_frame):
    cdef uint64_t head[4]
    cdef uint64_t value = 0
    cdef Py_ssize_t size, length, n_voters, n_learners
    cdef int i
    cdef char* p
    cdef bytes out
    memset(head, 0, sizeof(head))
    try:
        term, leader, snapshot = m.term, m.leader, m.snapshot
        index, snap_term, config = snapshot.index, snapshot.term, snapshot.config
        voters, learners = config.voters, config.learners
        ok = _u63(term, &head[0]) & _u63(leader, &head[1]) & _u63(index, &head[2]) & _u63(snap_term, &head[3])
        if not ok or head[1] == 0:
            raise _out_of_range(
                m, f"term={term!r} leader={leader!r} snapshot.index={index!r} snapshot.term={snap_term!r}"
            )
        if (type(voters) is not tuple or type(learners) is not tuple or not _members_ok(voters)
                or not _members_ok(learners) or not _disjoint(voters, learners)):
            raise _EncodingError(
                "encode InstallSnapshot",
                f"config must be sorted tuples of distinct ids, as Membership.of makes: {config!r}",
            )
        data = _as_bytes(snapshot.data, "snapshot data")
        n_voters = len(voters)
        n_learners = len(learners)
        length = PyBytes_GET_SIZE(data)
        if <uint64_t>n_voters > _U32 or <uint64_t>n_learners > _U32 or <uint64_t>length > _U32:
            raise OverflowError("a member count or the snapshot data length does not fit its u32")
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise _wrong_field(m, exc) from None
    size = SNAPSHOT_HEAD_SIZE + (n_voters + n_learners) * ID_SIZE + LENGTH_SIZE + length
    if framed:
        _frame_check(size, max_frame)
    out = _allocate(size, framed, &p)
    p[0] = <char>_VERSION
    p[1] = <char>code
    p += 2
    for i in range(4):
        p = rf_put_u64(p, head[i])
    p = rf_put_u32(p, <unsigned long>n_voters)
    p = rf_put_u32(p, <unsigned long>n_learners)
    for node in voters:
        _u63(node, &value)
        p = rf_put_u64(p, value)
    for node in learners:
        _u63(node, &value)
        p = rf_put_u64(p, value)
    p = rf_put_u32(p, <unsigned long>length)
    memcpy(p, PyBytes_AS_STRING(data), length)
    return out


def encode(message):
    """The version-1 encoding of `message`; EncodingError for a non-message or a bad field."""
    return _encode(message, False, None)


def encode_frame(message, max_frame=MAX_FRAME):
    """`encode(message)` behind its u32 little-endian length, ready for a stream.

    Raises EncodingError when the payload exceeds `max_frame`, the bound receivers enforce.
    """
    return _encode(message, True, max_frame)


# -- decode --------------------------------------------------------------------------------------

cdef object _malformed(object cls, str detail):
    return _EncodingError(f"decode {cls.__name__}", detail)


cdef object _bad_size(object cls, Py_ssize_t expected, Py_ssize_t got):
    return _malformed(cls, f"expected {expected} bytes, got {got}")


cdef str _RANGE = "a term, index or sequence number above 2**63-1, a node id of 0, or a flag not 0/1"


cdef inline uint64_t _u64_at(const unsigned char* data, Py_ssize_t offset) noexcept nogil:
    return rf_get_u64(data + offset)


cdef object _decode(const unsigned char* data, Py_ssize_t end):
    cdef int shape
    cdef unsigned char code
    if end < 2:
        raise _EncodingError("decode", f"{end} bytes is shorter than the 2-byte header")
    if data[0] != _VERSION:
        raise _EncodingError("decode", f"unsupported version {data[0]} (this build reads {_VERSION})")
    code = data[1]
    shape = _SHAPE_OF_CODE[code]
    if shape == S_NONE:
        raise _EncodingError("decode", f"unknown message type {code}")
    cls = _CLASS_OF_CODE[code]
    if shape == S_APPEND:
        return _decode_append(data, end, cls)
    if shape == S_INSTALL:
        return _decode_install(data, end, cls)
    return _decode_fixed(data, end, cls, shape)


cdef object _decode_fixed(const unsigned char* data, Py_ssize_t end, object cls, int shape):
    cdef uint64_t a, b, c, d, e
    cdef unsigned char flag
    if shape == S_PRE_VOTE or shape == S_REQUEST_VOTE:
        if shape == S_PRE_VOTE and end != PRE_VOTE_SIZE:
            raise _bad_size(cls, PRE_VOTE_SIZE, end)
        if shape == S_REQUEST_VOTE and end != REQUEST_VOTE_SIZE:
            raise _bad_size(cls, REQUEST_VOTE_SIZE, end)
        a, b, c, d = _u64_at(data, 2), _u64_at(data, 10), _u64_at(data, 18), _u64_at(data, 26)
        flag = data[34] if shape == S_REQUEST_VOTE else 0
        if (a | b | c | d) > _MAX or not b or flag > 1:
            raise _malformed(cls, _RANGE)
        if shape == S_PRE_VOTE:
            return cls(a, b, c, d)
        return cls(a, b, c, d, flag == 1)
    if shape == S_PRE_VOTE_REPLY or shape == S_REQUEST_VOTE_REPLY:
        if end != VOTE_REPLY_SIZE:
            raise _bad_size(cls, VOTE_REPLY_SIZE, end)
        a, flag, b = _u64_at(data, 2), data[10], _u64_at(data, 11)
        if (a | b) > _MAX or not b or flag > 1:
            raise _malformed(cls, _RANGE)
        return cls(a, flag == 1, b)
    if shape == S_APPEND_REPLY:
        if end != APPEND_REPLY_SIZE:
            raise _bad_size(cls, APPEND_REPLY_SIZE, end)
        a, flag, b = _u64_at(data, 2), data[10], _u64_at(data, 11)
        c, d, e = _u64_at(data, 19), _u64_at(data, 27), _u64_at(data, 35)
        if (a | b | c | d | e) > _MAX or not b or flag > 1:
            raise _malformed(cls, _RANGE)
        return cls(a, flag == 1, b, c, d, e)
    if shape == S_TIMEOUT_NOW:
        if end != TIMEOUT_NOW_SIZE:
            raise _bad_size(cls, TIMEOUT_NOW_SIZE, end)
        a, b = _u64_at(data, 2), _u64_at(data, 10)
        if (a | b) > _MAX or not b:
            raise _malformed(cls, _RANGE)
        return cls(a, b)
    # InstallSnapshotReply, ReadProbe, ReadProbeReply: term, node id, value.
    if end != TRIPLE_SIZE:
        raise _bad_size(cls, TRIPLE_SIZE, end)
    a, b, c = _u64_at(data, 2), _u64_at(data, 10), _u64_at(data, 18)
    if (a | b | c) > _MAX or not b:
        raise _malformed(cls, _RANGE)
    return cls(a, b, c)


cdef object _decode_append(const unsigned char* data, Py_ssize_t end, object cls):
    cdef Py_ssize_t offset = APPEND_HEAD_SIZE, i, spare
    cdef uint64_t term, leader, prev, prev_term, commit, entry_term
    cdef uint32_t count, size
    cdef unsigned char kind
    cdef list terms, commands
    cdef bytes kinds
    cdef char* kind_out
    cdef object value = None, command  # objects: SET_ITEM steals the references taken below
    cdef uint64_t last_term = 0
    if end < offset:
        raise _malformed(cls, f"{end} bytes is shorter than the {offset}-byte head")
    term, leader, prev = _u64_at(data, 2), _u64_at(data, 10), _u64_at(data, 18)
    prev_term, commit = _u64_at(data, 26), _u64_at(data, 34)
    count = rf_get_u32(data + 42)
    if (term | leader | prev | prev_term | commit) > _MAX or not leader:
        raise _malformed(cls, _RANGE)
    # Bytes left for commands once every entry's head is paid for. Checking it before building
    # anything bounds the columns by the input; it must end at exactly zero.
    spare = end - offset - <Py_ssize_t>count * ENTRY_HEAD_SIZE
    if spare < 0:
        raise _malformed(cls, f"{count} entries cannot fit in {end - offset} bytes")
    if prev + count > _MAX:
        raise _malformed(cls, f"{count} entries after index {prev} run past 2**63-1")
    terms = PyList_New(count)
    commands = PyList_New(count)
    kinds = PyBytes_FromStringAndSize(NULL, count)
    kind_out = PyBytes_AS_STRING(kinds)
    for i in range(count):
        entry_term = _u64_at(data, offset)
        kind = data[offset + 8]
        size = rf_get_u32(data + offset + 9)
        spare -= size
        if spare < 0 or entry_term > _MAX or kind > _MAX_KIND:
            # The unfilled slots of the lists are NULL, which list deallocation allows.
            raise _malformed(
                cls,
                f"entry {i}: command overruns the message, term above 2**63-1 or unknown kind",
            )
        offset += ENTRY_HEAD_SIZE
        if value is None or entry_term != last_term:
            # Runs of entries share a term: one int object per run, not per entry.
            value = entry_term
            last_term = entry_term
        Py_INCREF(value)
        PyList_SET_ITEM(terms, i, value)
        kind_out[i] = <char>kind
        command = PyBytes_FromStringAndSize(<const char*>data + offset, size)
        Py_INCREF(command)
        PyList_SET_ITEM(commands, i, command)
        offset += size
    if spare:
        raise _malformed(cls, f"{spare} trailing bytes")
    # Entries are numbered from prev + 1. An empty batch after the last possible index says
    # MAX_VALUE, which EntryBatch (an int64 in the compiled build) can hold; it carries nothing.
    batch = _EntryBatch(prev + 1 if prev < _MAX else _MAX, terms, kinds, commands)
    return cls(term, leader, prev, prev_term, batch, commit)


cdef tuple _ids(const unsigned char* data, Py_ssize_t offset, Py_ssize_t n):
    cdef tuple ids = PyTuple_New(n)
    cdef Py_ssize_t i
    cdef object value  # an int object: SET_ITEM steals the reference taken below
    for i in range(n):
        value = _u64_at(data, offset + i * ID_SIZE)
        Py_INCREF(value)
        PyTuple_SET_ITEM(ids, i, value)
    return ids


cdef int _canonical(const unsigned char* data, Py_ssize_t offset, Py_ssize_t n_voters,
                    Py_ssize_t n_learners) noexcept:
    """The ids at `offset` as Membership.of would give them: each group in 1..2**63-1 and
    strictly increasing, and the groups disjoint (a merge of two sorted runs)."""
    cdef Py_ssize_t i, j
    cdef uint64_t previous, value, x, y
    cdef Py_ssize_t learners = offset + n_voters * ID_SIZE
    previous = 0
    for i in range(n_voters):
        value = _u64_at(data, offset + i * ID_SIZE)
        if value <= previous or value > _MAX:
            return 0
        previous = value
    previous = 0
    for i in range(n_learners):
        value = _u64_at(data, learners + i * ID_SIZE)
        if value <= previous or value > _MAX:
            return 0
        previous = value
    i = j = 0
    while i < n_voters and j < n_learners:
        x = _u64_at(data, offset + i * ID_SIZE)
        y = _u64_at(data, learners + j * ID_SIZE)
        if x == y:
            return 0
        if x < y:
            i += 1
        else:
            j += 1
    return 1


cdef object _decode_install(const unsigned char* data, Py_ssize_t end, object cls):
    cdef Py_ssize_t offset = SNAPSHOT_HEAD_SIZE
    cdef uint64_t term, leader, index, snap_term
    cdef uint64_t n_voters, n_learners, n_ids
    cdef uint32_t size
    if end < offset:
        raise _malformed(cls, f"{end} bytes is shorter than the {offset}-byte head")
    term, leader, index, snap_term = _u64_at(data, 2), _u64_at(data, 10), _u64_at(data, 18), _u64_at(data, 26)
    n_voters, n_learners = rf_get_u32(data + 34), rf_get_u32(data + 38)
    if (term | leader | index | snap_term) > _MAX or not leader:
        raise _malformed(cls, _RANGE)
    n_ids = n_voters + n_learners
    if <uint64_t>(end - offset) < n_ids * ID_SIZE + LENGTH_SIZE:
        raise _malformed(cls, f"{n_ids} member ids and a data length cannot fit in {end - offset} bytes")
    if not _canonical(data, offset, n_voters, n_learners):
        raise _malformed(cls, "config ids must be in 1..2**63-1, sorted, distinct and disjoint")
    voters = _ids(data, offset, n_voters)
    learners = _ids(data, offset + n_voters * ID_SIZE, n_learners)
    offset += n_ids * ID_SIZE
    size = rf_get_u32(data + offset)
    offset += LENGTH_SIZE
    if end - offset != size:
        raise _malformed(cls, f"snapshot data is {size} bytes but {end - offset} remain")
    payload = PyBytes_FromStringAndSize(<const char*>data + offset, size)
    return cls(term, leader, _Snapshot(index, snap_term, _Membership(voters, learners), payload))


def decode(data):
    """The message `data` encodes; EncodingError (and nothing else) for anything that is not
    exactly one version-1 encoding. Accepts bytes, bytearray and memoryview."""
    cdef Py_buffer view
    if type(data) is bytes:
        return _decode(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _EncodingError(
            "decode", f"expected bytes, bytearray or memoryview, got {type(data).__name__}"
        )
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BufferError:
        # A non-contiguous memoryview: one copy, as the pure twin always makes.
        return decode(bytes(data))
    except ValueError as exc:  # a released memoryview
        raise _EncodingError("decode", str(exc)) from None
    try:
        return _decode(<const unsigned char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# -- framing -------------------------------------------------------------------------------------

cdef class FrameReader:
    """Splits a byte stream into frame payloads: each frame is a u32 little-endian length, then
    that many bytes. Payloads are returned as bytes, ready for `decode`.

    A length prefix below 2 or above `max_frame` means the stream is garbage or out of step:
    `feed` raises EncodingError, and raises again on every later call, since no later byte can
    be trusted. Close the connection. Frames completed earlier in that same call are dropped
    with it.
    """

    def __cinit__(self):
        self._buf = NULL
        self._start = 0
        self._end = 0
        self._cap = 0
        self._need = LENGTH_SIZE

    def __init__(self, max_frame=MAX_FRAME):
        if max_frame < MIN_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_FRAME}, got {max_frame}")
        self._max_frame = max_frame
        self._limit = _U32 if max_frame >= _U32 else int(max_frame)
        self._start = 0
        self._end = 0
        self._need = LENGTH_SIZE

    def __dealloc__(self):
        PyMem_Free(self._buf)

    @property
    def max_frame(self):
        return self._max_frame

    @property
    def buffered(self):
        """Bytes held towards an incomplete frame (non-zero at EOF means a truncated stream)."""
        return self._end - self._start

    cdef int _append(self, const char* data, Py_ssize_t size) except -1:
        cdef Py_ssize_t held, cap
        cdef char* grown
        if size == 0:
            return 0
        if self._cap - self._end < size:
            held = self._end - self._start
            if self._start:
                memmove(self._buf, self._buf + self._start, held)
                self._start = 0
                self._end = held
            if self._cap - held < size:
                cap = max(held + size, self._cap * 2, 4096)
                grown = <char*>PyMem_Realloc(self._buf, cap)
                if grown == NULL:
                    raise MemoryError()
                self._buf = grown
                self._cap = cap
        memcpy(self._buf + self._end, data, size)
        self._end += size
        return 0

    cdef Py_ssize_t _split(self, const unsigned char* data, Py_ssize_t size, list frames,
                           int64_t* bad) except -1:
        """Appends the payload of every complete frame in data[:size] to `frames`; returns the
        bytes consumed. Sets _need, and *bad to a bad length prefix (which is not consumed)."""
        cdef Py_ssize_t start = 0, stop
        cdef Py_ssize_t need = LENGTH_SIZE
        cdef uint64_t length
        while size - start >= LENGTH_SIZE:
            length = rf_get_u32(data + start)
            if length < _MIN_FRAME or length > self._limit:
                bad[0] = <int64_t>length
                break
            stop = start + LENGTH_SIZE + <Py_ssize_t>length
            if stop > size:
                need = stop - start
                break
            frames.append(PyBytes_FromStringAndSize(<const char*>data + start + LENGTH_SIZE, length))
            start = stop
        self._need = need
        return start

    cpdef list feed(self, object data):
        """Add `data`; return the payloads of every frame it completes, in order."""
        cdef Py_buffer view
        cdef list frames = []
        cdef int64_t bad = -1
        cdef Py_ssize_t used
        cdef const unsigned char* chunk
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except Exception:
            # What `bytearray += data` raises in the pure twin.
            raise TypeError(f"can't concat {type(data).__name__} to bytearray") from None
        try:
            chunk = <const unsigned char*>view.buf
            if self._start == self._end:
                # Nothing held: split the chunk where it lies and keep only its incomplete tail.
                self._start = 0
                self._end = 0
                if view.len < self._need:
                    self._append(<const char*>chunk, view.len)
                    return frames
                used = self._split(chunk, view.len, frames, &bad)
                self._append(<const char*>chunk + used, view.len - used)
            else:
                self._append(<const char*>chunk, view.len)
                if self._end - self._start < self._need:  # a large frame arriving in pieces
                    return frames
                used = self._split(<const unsigned char*>self._buf + self._start,
                                   self._end - self._start, frames, &bad)
                self._start += used
            if self._start == self._end:
                self._start = 0
                self._end = 0
                if self._cap > SHRINK_ABOVE:
                    PyMem_Free(self._buf)
                    self._buf = NULL
                    self._cap = 0
            if bad >= 0:
                # The bad prefix stays at the front, so every later call fails the same way.
                raise _EncodingError(
                    "frame", f"length prefix {bad} is outside {MIN_FRAME}..{self._max_frame}"
                )
            return frames
        finally:
            PyBuffer_Release(&view)
