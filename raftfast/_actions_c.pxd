# Lets other kernels cimport Apply and build it without argument parsing (the entry log
# makes one per committed entry); the dataclass fields stay as declared in _actions_c.pyx.

from libc.stdint cimport int64_t


cdef class Apply:
    cdef public int64_t index
    cdef public int64_t term
    cdef public object command
