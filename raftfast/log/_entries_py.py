"""Pure-Python entry kernel: the in-memory log of entries above a snapshot.

Terms are packed in an `array('q')` and kinds in a `bytearray`, so the log costs one bytes
object per entry, not one LogEntry; LogEntry objects are built only when asked for.
"""

from __future__ import annotations

from array import array
from typing import Iterator, List, Optional, Sequence, Union, overload

from ..types import EntryKind, LogEntry

_KINDS = (EntryKind.NORMAL, EntryKind.CONFIG, EntryKind.NOOP)


class EntryBatch(Sequence[LogEntry]):
    """Consecutive entries from `first_index`, stored as parallel columns: a compact sequence
    that yields LogEntry. It is what `EntryLog.batch` returns and what the codec decodes
    AppendEntries entries into, so replication never builds one object per entry."""

    __slots__ = ("_first", "_terms", "_kinds", "_commands")

    def __init__(self, first_index: int, terms: Sequence[int], kinds: bytes, commands: List[bytes]) -> None:
        if not (len(terms) == len(kinds) == len(commands)):
            raise ValueError("EntryBatch: terms, kinds and commands differ in length")
        self._first = first_index
        self._terms = list(terms)
        self._kinds = bytes(kinds)
        self._commands = list(commands)

    @property
    def first_index(self) -> int:
        return self._first

    @property
    def last_index(self) -> int:
        return self._first + len(self._commands) - 1

    @property
    def terms(self) -> List[int]:
        return self._terms

    @property
    def kinds(self) -> bytes:
        return self._kinds

    @property
    def commands(self) -> List[bytes]:
        return self._commands

    def __len__(self) -> int:
        return len(self._commands)

    @overload
    def __getitem__(self, i: int) -> LogEntry: ...

    @overload
    def __getitem__(self, i: slice) -> "EntryBatch": ...

    def __getitem__(self, i: Union[int, slice]):
        n = len(self._commands)
        if isinstance(i, slice):
            start, stop, step = i.indices(n)
            if step != 1:
                raise ValueError("EntryBatch slices must be contiguous")
            stop = max(start, stop)
            return EntryBatch(self._first + start, self._terms[start:stop], self._kinds[start:stop], self._commands[start:stop])
        if i < 0:
            i += n
        if i < 0 or i >= n:
            raise IndexError("EntryBatch index out of range")
        return LogEntry(self._terms[i], self._first + i, _KINDS[self._kinds[i]], self._commands[i])

    def __iter__(self) -> Iterator[LogEntry]:
        first, kinds = self._first, self._kinds
        for i, (term, command) in enumerate(zip(self._terms, self._commands)):
            yield LogEntry(term, first + i, _KINDS[kinds[i]], command)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EntryBatch):
            return (
                (self._first == other._first or not self._commands)
                and self._terms == other._terms
                and self._kinds == other._kinds
                and self._commands == other._commands
            )
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"EntryBatch(first_index={self._first}, count={len(self._commands)})"


class EntryLog:
    """Entries `offset+1 .. last_index()`, with `offset_term` the term at `offset`."""

    __slots__ = ("_offset", "_offset_term", "_terms", "_kinds", "_commands", "_bytes")

    def __init__(self, offset: int = 0, offset_term: int = 0) -> None:
        self._offset = offset
        self._offset_term = offset_term
        self._terms = array("q")
        self._kinds = bytearray()
        self._commands: List[bytes] = []
        self._bytes = 0

    # -- reads -----------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def offset_term(self) -> int:
        return self._offset_term

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def payload_bytes(self) -> int:
        """Total bytes of the commands held."""
        return self._bytes

    def last_index(self) -> int:
        return self._offset + len(self._commands)

    def last_term(self) -> int:
        terms = self._terms
        return terms[-1] if terms else self._offset_term

    def term_at(self, index: int) -> Optional[int]:
        i = index - self._offset
        if i == 0:
            return self._offset_term
        if i < 0 or i > len(self._terms):
            return None
        return self._terms[i - 1]

    def entry(self, index: int) -> LogEntry:
        i = index - self._offset - 1
        if i < 0 or i >= len(self._commands):
            raise IndexError(f"entry {index} is outside the log ({self._offset + 1}..{self.last_index()})")
        return LogEntry(self._terms[i], index, _KINDS[self._kinds[i]], self._commands[i])

    def entries(self, lo: int, hi: int) -> List[LogEntry]:
        """Entries lo..hi inclusive (empty when hi < lo)."""
        if hi < lo:
            return []
        offset = self._offset
        if lo <= offset or hi > offset + len(self._commands):
            raise IndexError(f"entries {lo}..{hi} are outside the log ({offset + 1}..{self.last_index()})")
        terms, kinds, commands = self._terms, self._kinds, self._commands
        return [
            LogEntry(terms[i], i + offset + 1, _KINDS[kinds[i]], commands[i])
            for i in range(lo - offset - 1, hi - offset)
        ]

    def batch(self, lo: int, max_count: int, max_bytes: int) -> EntryBatch:
        """Entries from `lo` for one AppendEntries: at most `max_count` entries and, after the
        first (always sent, however large), at most `max_bytes` of commands."""
        offset = self._offset
        start = lo - offset - 1
        n = len(self._commands)
        if start < 0 or start > n:
            raise IndexError(f"batch start {lo} is outside the log ({offset + 1}..{self.last_index() + 1})")
        stop = min(n, start + max_count)
        commands = self._commands
        if start < stop:
            size = len(commands[start])
            i = start + 1
            while i < stop:
                size += len(commands[i])
                if size > max_bytes:
                    break
                i += 1
            stop = i
        return EntryBatch(start + offset + 1, self._terms[start:stop].tolist(), bytes(self._kinds[start:stop]), commands[start:stop])

    def slices(self, lo: int, hi: int):
        """Entries lo..hi as three parallel sequences: terms, kinds (ints) and commands."""
        if hi < lo:
            return [], b"", []
        offset = self._offset
        if lo <= offset or hi > offset + len(self._commands):
            raise IndexError(f"entries {lo}..{hi} are outside the log ({offset + 1}..{self.last_index()})")
        a, b = lo - offset - 1, hi - offset
        return self._terms[a:b].tolist(), bytes(self._kinds[a:b]), self._commands[a:b]

    def collect_applies(self, lo: int, hi: int, out: list, factory) -> None:
        """Append `factory(index, term, command)` to `out` for each NORMAL entry in lo..hi:
        the apply path, without building LogEntry objects."""
        offset = self._offset
        if hi < lo:
            return
        if lo <= offset or hi > offset + len(self._commands):
            raise IndexError(f"entries {lo}..{hi} are outside the log ({offset + 1}..{self.last_index()})")
        a = lo - offset - 1
        b = hi - offset
        index = lo - 1
        append = out.append
        for term, kind, command in zip(self._terms[a:b], self._kinds[a:b], self._commands[a:b]):
            index += 1
            if kind == 0:
                append(factory(index, term, command))

    # -- writes ----------------------------------------------------------------------------

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Append `entries`, the first at `last_index()+1`; all or nothing (ValueError)."""
        expected = self._offset + len(self._commands) + 1
        last_term = self.last_term()
        if type(entries) is EntryBatch:
            self._append_batch(entries, expected, last_term)
            return
        new_terms: List[int] = []
        new_kinds = bytearray()
        new_commands: List[bytes] = []
        for entry in entries:
            if entry.index != expected:
                raise ValueError(f"append: expected index {expected}, got {entry.index}")
            if entry.term < last_term:
                raise ValueError(f"append: term {entry.term} at index {expected} is below {last_term}")
            kind = int(entry.kind)
            if kind < 0 or kind > 2:
                raise ValueError(f"append: invalid entry kind {entry.kind!r}")
            command = entry.command
            if type(command) is not bytes:
                command = bytes(command)
            new_terms.append(entry.term)
            new_kinds.append(kind)
            new_commands.append(command)
            last_term = entry.term
            expected += 1
        self._terms.extend(new_terms)
        self._kinds += new_kinds
        self._commands += new_commands
        self._bytes += sum(map(len, new_commands))

    def _append_batch(self, batch: EntryBatch, expected: int, last_term: int) -> None:
        if not len(batch):
            return
        if batch.first_index != expected:
            raise ValueError(f"append: expected index {expected}, got {batch.first_index}")
        previous = last_term
        for i, term in enumerate(batch.terms):
            if term < previous:
                raise ValueError(f"append: term {term} at index {expected + i} is below {previous}")
            previous = term
        kinds = batch.kinds
        if kinds and max(kinds) > 2:
            raise ValueError(f"append: invalid entry kind {max(kinds)!r}")
        self._terms.extend(batch.terms)
        self._kinds += kinds
        self._commands += batch.commands
        self._bytes += sum(map(len, batch.commands))

    def append_commands(self, term: int, kind: int, commands: Sequence[bytes]) -> int:
        """Append one entry per command, all in `term` with `kind`; returns the new last index."""
        if term < self.last_term():
            raise ValueError(f"append: term {term} is below {self.last_term()}")
        for command in commands:
            if type(command) is not bytes:
                raise TypeError(f"append_commands: commands must be bytes, got {type(command).__name__}")
        n = len(commands)
        self._terms.extend([term] * n)
        self._kinds.extend(bytes([kind]) * n)
        self._commands.extend(commands)
        self._bytes += sum(map(len, commands))
        return self._offset + len(self._commands)

    def extend_raw(self, terms: List[int], kinds: bytes, commands: List[bytes]) -> None:
        """Bulk-append entries the caller has already validated (a WAL replaying its records):
        terms non-decreasing and not below `last_term()`, kinds valid, commands bytes."""
        if not len(terms) == len(kinds) == len(commands):
            raise ValueError("extend_raw: terms, kinds and commands differ in length")
        self._terms.extend(terms)
        self._kinds += kinds
        self._commands += commands
        self._bytes += sum(map(len, commands))

    def truncate(self, from_index: int) -> None:
        """Drop entries at or after `from_index` (> offset)."""
        if from_index <= self._offset:
            raise ValueError(f"truncate: index {from_index} is at or below the snapshot ({self._offset})")
        i = from_index - self._offset - 1
        if i >= len(self._commands):
            return
        self._bytes -= sum(map(len, self._commands[i:]))
        del self._terms[i:], self._kinds[i:], self._commands[i:]

    def compact(self, index: int, term: int) -> None:
        """Make `index` (with `term`) the new offset. Entries above it are kept when the log
        holds `index` with that term; otherwise the log is emptied."""
        if index < self._offset:
            raise ValueError(f"compact: index {index} is below the current offset {self._offset}")
        if self.term_at(index) == term:
            i = index - self._offset
            self._bytes -= sum(map(len, self._commands[:i]))
            del self._terms[:i], self._kinds[:i], self._commands[:i]
        else:
            self._terms = array("q")
            self._kinds = bytearray()
            self._commands = []
            self._bytes = 0
        self._offset = index
        self._offset_term = term
