from libc.stdint cimport int64_t, uint8_t


cdef class EntryBatch:
    cdef int64_t _first
    cdef list _terms
    cdef bytes _kinds
    cdef list _commands

    @staticmethod
    cdef EntryBatch _new(int64_t first, list terms, bytes kinds, list commands)


cdef class EntryLog:
    cdef int64_t _offset
    cdef int64_t _offset_term
    cdef int64_t* _terms
    cdef uint8_t* _kinds
    cdef Py_ssize_t _n
    cdef Py_ssize_t _cap
    cdef list _commands
    cdef int64_t _bytes

    cdef int _reserve(self, Py_ssize_t need) except -1
    cdef object _make(self, Py_ssize_t i)
    cpdef int64_t last_index(self)
    cpdef int64_t last_term(self)
    cpdef object term_at(self, int64_t index)
    cpdef object entry(self, int64_t index)
    cpdef list entries(self, int64_t lo, int64_t hi)
    cpdef EntryBatch batch(self, int64_t lo, Py_ssize_t max_count, Py_ssize_t max_bytes)
    cdef int _append_batch(self, EntryBatch batch, int64_t expected, int64_t last_term) except -1
    cpdef int64_t append_commands(self, int64_t term, int kind, list commands) except? -1
    cpdef collect_applies(self, int64_t lo, int64_t hi, list out, object factory)
    cpdef truncate(self, int64_t from_index)
    cpdef compact(self, int64_t index, int64_t term)
