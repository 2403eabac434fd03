# Lets other kernels cimport Apply and build it without argument parsing (the entry log
# makes one per committed entry); the dataclass fields stay as declared in _actions_c.pyx.

cdef class Apply:
    cdef public object index
    cdef public object term
    cdef public object command
