"""RaftLog: the storage protocol a RaftNode owns."""

from __future__ import annotations

from typing import List, Optional, Protocol, Sequence, runtime_checkable

from ..types import HardState, Index, LogEntry, Snapshot, Term


@runtime_checkable
class RaftLog(Protocol):
    """Entries after the snapshot, the hard state, and the latest snapshot.

    Index 0 is the sentinel before the first entry, with term 0. After compaction the first
    entry is `snapshot_index() + 1` and `term_at(snapshot_index())` is the snapshot's term.
    Writes may be buffered until `sync()`, the durability barrier.

    Optional: `durable_index() -> Index`, for a log whose `sync()` only starts the write (a
    runtime that runs the fsync beside replication, thesis §10.2.1): the highest index known
    to survive a crash. A leader then counts itself toward a commit only up to it. Without
    it the node counts its whole log, as `sync()` returned.
    """

    def last_index(self) -> Index: ...

    def last_term(self) -> Term: ...

    def term_at(self, index: Index) -> Optional[Term]:
        """The term of entry `index`; 0 at index 0; None outside the log."""

    def entry(self, index: Index) -> LogEntry:
        """Entry `index`; IndexError outside `snapshot_index()+1 .. last_index()`."""

    def entries(self, lo: Index, hi: Index) -> List[LogEntry]:
        """Entries `lo..hi` inclusive; IndexError if any of them is outside the log."""

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Append; the first entry must be `last_index()+1` (ValueError otherwise)."""

    def truncate(self, from_index: Index) -> None:
        """Drop every entry at or after `from_index` (which must be above the snapshot)."""

    def hard_state(self) -> HardState: ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def sync(self) -> None:
        """Every earlier write survives a crash once this returns."""

    def snapshot_index(self) -> Index: ...

    def snapshot(self) -> Snapshot: ...

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install `snapshot`: entries it covers are dropped; a matching suffix is kept."""
