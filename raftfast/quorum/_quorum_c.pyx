# cython: language_level=3
"""Compiled quorum math: the twin of `_quorum_py`, same names, results and errors."""

from libc.stdint cimport int64_t

VOTE_PENDING = 0
VOTE_WON = 1
VOTE_LOST = -1

cdef enum:
    _SMALL = 16  # sorted on the stack up to this many


cdef void _insertion_sort(int64_t* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef int64_t x
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


cpdef int64_t committed_index(list matches) except? -1:
    """The highest index that a majority of `matches` (one per voter) has reached.

    Sorts `matches` in place. An empty voter set commits nothing.
    """
    cdef Py_ssize_t n = len(matches), i
    cdef int64_t buf[_SMALL]
    if n == 0:
        return 0
    if n > _SMALL:
        matches.sort()
        return matches[n - (n // 2 + 1)]
    for i in range(n):
        buf[i] = matches[i]
    _insertion_sort(buf, n)
    for i in range(n):
        matches[i] = buf[i]
    return buf[n - (n // 2 + 1)]


def vote_result(voters, granted, rejected):
    """VOTE_WON once a majority of `voters` granted, VOTE_LOST once a majority cannot be
    reached, VOTE_PENDING otherwise. Replies from non-voters do not count."""
    cdef set voter_set = set(voters)
    cdef Py_ssize_t majority = len(voter_set) // 2 + 1
    cdef Py_ssize_t yes = len(voter_set.intersection(granted)), no
    if yes >= majority:
        return VOTE_WON
    no = len(voter_set.intersection(rejected))
    if len(voter_set) - no < majority:
        return VOTE_LOST
    return VOTE_PENDING
