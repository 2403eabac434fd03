from libc.stdint cimport int64_t, uint64_t


cdef class FrameReader:
    # Unconsumed stream bytes are _buf[_start:_end]; _cap is the allocation.
    cdef char* _buf
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef Py_ssize_t _cap
    # Buffered bytes needed before another frame can complete (a partial frame's full size).
    cdef Py_ssize_t _need
    # max_frame as given (the property), and as a C bound on a u32 length prefix.
    cdef object _max_frame
    cdef uint64_t _limit

    cdef int _append(self, const char* data, Py_ssize_t size) except -1
    cdef Py_ssize_t _split(self, const unsigned char* data, Py_ssize_t size, list frames,
                           int64_t* bad) except -1
    cpdef list feed(self, object data)
