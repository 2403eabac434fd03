# cython: language_level=3
"""Compiled entry kernel: the twin of `_entries_py.EntryLog`, same names, results and errors.

Terms live in a growable C array of int64 and kinds in one of uint8, so a log of N entries
costs N bytes objects plus 9*N bytes, and term lookups never touch a Python object.
"""

from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memmove

from raftfast._actions_c cimport Apply
from raftfast.types import EntryKind, LogEntry

from collections.abc import Sequence

cdef tuple _KINDS = (EntryKind.NORMAL, EntryKind.CONFIG, EntryKind.NOOP)
cdef object _LogEntry = LogEntry


cdef class EntryBatch:
    """Consecutive entries from `first_index`, stored as parallel columns: a compact sequence
    that yields LogEntry. It is what `EntryLog.batch` returns and what the codec decodes
    AppendEntries entries into, so replication never builds one object per entry."""

    def __init__(self, int64_t first_index, terms, kinds, commands):
        if not (len(terms) == len(kinds) == len(commands)):
            raise ValueError("EntryBatch: terms, kinds and commands differ in length")
        self._first = first_index
        self._terms = list(terms)
        self._kinds = bytes(kinds)
        self._commands = list(commands)

    @staticmethod
    cdef EntryBatch _new(int64_t first, list terms, bytes kinds, list commands):
        cdef EntryBatch batch = EntryBatch.__new__(EntryBatch)
        batch._first = first
        batch._terms = terms
        batch._kinds = kinds
        batch._commands = commands
        return batch

    @property
    def first_index(self):
        return self._first

    @property
    def last_index(self):
        return self._first + len(self._commands) - 1

    @property
    def terms(self):
        return self._terms

    @property
    def kinds(self):
        return self._kinds

    @property
    def commands(self):
        return self._commands

    def __len__(self):
        return len(self._commands)

    def __getitem__(self, i):
        cdef Py_ssize_t n = len(self._commands), k, start, stop, step
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step != 1:
                raise ValueError("EntryBatch slices must be contiguous")
            stop = max(start, stop)
            return EntryBatch._new(
                self._first + start, self._terms[start:stop], self._kinds[start:stop], self._commands[start:stop]
            )
        k = i
        if k < 0:
            k += n
        if k < 0 or k >= n:
            raise IndexError("EntryBatch index out of range")
        return _LogEntry(self._terms[k], self._first + k, _KINDS[self._kinds[k]], self._commands[k])

    def __iter__(self):
        cdef Py_ssize_t k
        cdef const unsigned char* kinds = self._kinds
        for k in range(len(self._commands)):
            yield _LogEntry(self._terms[k], self._first + k, _KINDS[kinds[k]], self._commands[k])

    def __eq__(self, other):
        cdef EntryBatch o
        if isinstance(other, EntryBatch):
            o = <EntryBatch>other
            return (
                (self._first == o._first or not self._commands)
                and self._terms == o._terms
                and self._kinds == o._kinds
                and self._commands == o._commands
            )
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self):
        return f"EntryBatch(first_index={self._first}, count={len(self._commands)})"


Sequence.register(EntryBatch)


cdef class EntryLog:
    """Entries `offset+1 .. last_index()`, with `offset_term` the term at `offset`."""

    def __cinit__(self, int64_t offset=0, int64_t offset_term=0):
        self._offset = offset
        self._offset_term = offset_term
        self._terms = NULL
        self._kinds = NULL
        self._n = 0
        self._cap = 0
        self._commands = []
        self._bytes = 0

    def __dealloc__(self):
        PyMem_Free(self._terms)
        PyMem_Free(self._kinds)

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap
        cdef int64_t* terms
        cdef uint8_t* kinds
        if need <= self._cap:
            return 0
        cap = max(need, self._cap * 2, 64)
        terms = <int64_t*>PyMem_Realloc(self._terms, cap * sizeof(int64_t))
        if terms == NULL:
            raise MemoryError()
        self._terms = terms
        kinds = <uint8_t*>PyMem_Realloc(self._kinds, cap * sizeof(uint8_t))
        if kinds == NULL:
            raise MemoryError()
        self._kinds = kinds
        self._cap = cap
        return 0

    # -- reads -----------------------------------------------------------------------------

    @property
    def offset(self):
        return self._offset

    @property
    def offset_term(self):
        return self._offset_term

    def __len__(self):
        return self._n

    @property
    def payload_bytes(self):
        """Total bytes of the commands held."""
        return self._bytes

    cpdef int64_t last_index(self):
        return self._offset + self._n

    cpdef int64_t last_term(self):
        return self._terms[self._n - 1] if self._n else self._offset_term

    cpdef object term_at(self, int64_t index):
        cdef int64_t i = index - self._offset
        if i == 0:
            return self._offset_term
        if i < 0 or i > self._n:
            return None
        return self._terms[i - 1]

    cdef inline object _make(self, Py_ssize_t i):
        return _LogEntry(self._terms[i], i + self._offset + 1, _KINDS[self._kinds[i]], self._commands[i])

    cpdef object entry(self, int64_t index):
        cdef int64_t i = index - self._offset - 1
        if i < 0 or i >= self._n:
            raise IndexError(f"entry {index} is outside the log ({self._offset + 1}..{self.last_index()})")
        return self._make(i)

    cpdef list entries(self, int64_t lo, int64_t hi):
        """Entries lo..hi inclusive (empty when hi < lo)."""
        cdef Py_ssize_t i
        cdef list result
        if hi < lo:
            return []
        if lo <= self._offset or hi > self._offset + self._n:
            raise IndexError(f"entries {lo}..{hi} are outside the log ({self._offset + 1}..{self.last_index()})")
        result = []
        for i in range(lo - self._offset - 1, hi - self._offset):
            result.append(self._make(i))
        return result

    cpdef EntryBatch batch(self, int64_t lo, Py_ssize_t max_count, Py_ssize_t max_bytes):
        """Entries from `lo` for one AppendEntries: at most `max_count` entries and, after the
        first (always sent, however large), at most `max_bytes` of commands."""
        cdef Py_ssize_t start = lo - self._offset - 1
        cdef Py_ssize_t stop, i, size
        cdef list commands = self._commands
        cdef list terms
        cdef object term
        if start < 0 or start > self._n:
            raise IndexError(f"batch start {lo} is outside the log ({self._offset + 1}..{self.last_index() + 1})")
        stop = min(self._n, start + max_count)
        if start < stop:
            size = len(<bytes>commands[start])
            i = start + 1
            while i < stop:
                size += len(<bytes>commands[i])
                if size > max_bytes:
                    break
                i += 1
            stop = i
        # sized once, filled in place: this runs per peer for every entry replicated
        terms = PyList_New(stop - start)
        for i in range(start, stop):
            term = self._terms[i]
            Py_INCREF(term)
            PyList_SET_ITEM(terms, i - start, term)
        return EntryBatch._new(start + self._offset + 1, terms, (<char*>self._kinds)[start:stop], commands[start:stop])

    def slices(self, int64_t lo, int64_t hi):
        """Entries lo..hi as three parallel sequences: terms, kinds (ints) and commands."""
        cdef Py_ssize_t a, b, i
        if hi < lo:
            return [], b"", []
        if lo <= self._offset or hi > self._offset + self._n:
            raise IndexError(f"entries {lo}..{hi} are outside the log ({self._offset + 1}..{self.last_index()})")
        a = lo - self._offset - 1
        b = hi - self._offset
        return (
            [self._terms[i] for i in range(a, b)],
            (<char*>self._kinds)[a:b],
            self._commands[a:b],
        )

    cpdef collect_applies(self, int64_t lo, int64_t hi, list out, object factory):
        """Append `factory(index, term, command)` to `out` for each NORMAL entry in lo..hi:
        the apply path, without building LogEntry objects."""
        cdef Py_ssize_t i
        cdef list commands = self._commands
        cdef Apply apply
        if hi < lo:
            return
        if lo <= self._offset or hi > self._offset + self._n:
            raise IndexError(f"entries {lo}..{hi} are outside the log ({self._offset + 1}..{self.last_index()})")
        if factory is not Apply:
            for i in range(lo - self._offset - 1, hi - self._offset):
                if self._kinds[i] == 0:
                    out.append(factory(i + self._offset + 1, self._terms[i], commands[i]))
            return
        # The node's own factory: fill the fields directly, skipping the call and its
        # argument parsing (most of an Apply's cost).
        for i in range(lo - self._offset - 1, hi - self._offset):
            if self._kinds[i] == 0:
                apply = Apply.__new__(Apply)
                apply.index = i + self._offset + 1
                apply.term = self._terms[i]
                apply.command = commands[i]
                out.append(apply)

    # -- writes ----------------------------------------------------------------------------

    def append(self, entries):
        """Append `entries`, the first at `last_index()+1`; all or nothing (ValueError)."""
        cdef int64_t expected = self._offset + self._n + 1
        cdef int64_t last_term = self.last_term()
        cdef int64_t term
        cdef Py_ssize_t count = len(entries), k = 0, added = 0
        cdef list new_commands = []
        cdef object command
        cdef int kind
        if type(entries) is EntryBatch:
            self._append_batch(<EntryBatch>entries, expected, last_term)
            return
        self._reserve(self._n + count)
        # Terms and kinds are staged above _n and only committed once every entry is valid.
        for entry in entries:
            if entry.index != expected:
                raise ValueError(f"append: expected index {expected}, got {entry.index}")
            term = entry.term
            if term < last_term:
                raise ValueError(f"append: term {term} at index {expected} is below {last_term}")
            kind = entry.kind
            if kind < 0 or kind > 2:
                raise ValueError(f"append: invalid entry kind {kind!r}")
            command = entry.command
            if type(command) is not bytes:
                command = bytes(command)
            if k >= self._cap - self._n:
                self._reserve(self._n + k + 1)
            self._terms[self._n + k] = term
            self._kinds[self._n + k] = <uint8_t>kind
            new_commands.append(command)
            added += len(<bytes>command)
            last_term = term
            expected += 1
            k += 1
        self._commands.extend(new_commands)
        self._n += k
        self._bytes += added

    cdef int _append_batch(self, EntryBatch batch, int64_t expected, int64_t last_term) except -1:
        cdef Py_ssize_t n = len(batch._commands), i
        cdef int64_t term, added = 0
        cdef const unsigned char* kinds = batch._kinds
        if n == 0:
            return 0
        if batch._first != expected:
            raise ValueError(f"append: expected index {expected}, got {batch._first}")
        self._reserve(self._n + n)
        for i in range(n):
            term = batch._terms[i]
            if term < last_term:
                raise ValueError(f"append: term {term} at index {expected + i} is below {last_term}")
            if kinds[i] > 2:
                raise ValueError(f"append: invalid entry kind {max(batch._kinds)!r}")
            self._terms[self._n + i] = term
            self._kinds[self._n + i] = kinds[i]
            last_term = term
        for command in batch._commands:
            added += len(<bytes>command)
        self._commands.extend(batch._commands)
        self._n += n
        self._bytes += added
        return 0

    cpdef int64_t append_commands(self, int64_t term, int kind, list commands) except? -1:
        """Append one entry per command, all in `term` with `kind`; returns the new last index."""
        cdef Py_ssize_t n = len(commands), i
        cdef int64_t added = 0
        if term < self.last_term():
            raise ValueError(f"append: term {term} is below {self.last_term()}")
        for command in commands:
            if type(command) is not bytes:
                raise TypeError(f"append_commands: commands must be bytes, got {type(command).__name__}")
            added += len(<bytes>command)
        self._reserve(self._n + n)
        for i in range(n):
            self._terms[self._n + i] = term
            self._kinds[self._n + i] = <uint8_t>kind
        self._commands.extend(commands)
        self._n += n
        self._bytes += added
        return self._offset + self._n

    def extend_raw(self, terms, kinds, commands):
        """Bulk-append entries the caller has already validated (a WAL replaying its records):
        terms non-decreasing and not below `last_term()`, kinds valid, commands bytes."""
        cdef Py_ssize_t n = len(commands), i
        cdef const int64_t[:] view
        cdef const unsigned char[:] kind_view
        cdef int64_t added = 0
        if not len(terms) == len(kinds) == n:
            raise ValueError("extend_raw: terms, kinds and commands differ in length")
        if n == 0:
            return
        self._reserve(self._n + n)
        kind_view = kinds
        try:
            view = terms
        except (TypeError, ValueError):
            for i in range(n):
                self._terms[self._n + i] = terms[i]
        else:
            for i in range(n):
                self._terms[self._n + i] = view[i]
        for i in range(n):
            self._kinds[self._n + i] = kind_view[i]
        for command in commands:
            added += len(<bytes>command)
        self._commands.extend(commands)
        self._n += n
        self._bytes += added

    cpdef truncate(self, int64_t from_index):
        """Drop entries at or after `from_index` (> offset)."""
        cdef Py_ssize_t i
        if from_index <= self._offset:
            raise ValueError(f"truncate: index {from_index} is at or below the snapshot ({self._offset})")
        i = from_index - self._offset - 1
        if i >= self._n:
            return
        for command in self._commands[i:]:
            self._bytes -= len(<bytes>command)
        del self._commands[i:]
        self._n = i

    cpdef compact(self, int64_t index, int64_t term):
        """Make `index` (with `term`) the new offset. Entries above it are kept when the log
        holds `index` with that term; otherwise the log is emptied."""
        cdef Py_ssize_t i
        if index < self._offset:
            raise ValueError(f"compact: index {index} is below the current offset {self._offset}")
        held = self.term_at(index)
        if held is not None and held == term:
            i = index - self._offset
            for command in self._commands[:i]:
                self._bytes -= len(<bytes>command)
            del self._commands[:i]
            memmove(self._terms, self._terms + i, (self._n - i) * sizeof(int64_t))
            memmove(self._kinds, self._kinds + i, (self._n - i) * sizeof(uint8_t))
            self._n -= i
        else:
            self._commands = []
            self._n = 0
            self._bytes = 0
        self._offset = index
        self._offset_term = term
