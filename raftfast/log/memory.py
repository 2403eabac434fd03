"""MemoryLog: a RaftLog held entirely in memory; `sync()` is free."""

from __future__ import annotations

from typing import List, Optional, Sequence

from ..types import EMPTY_SNAPSHOT, HardState, LogEntry, Snapshot
from ._entries import EntryLog


class MemoryLog:
    __slots__ = ("_entries", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._entries = EntryLog()
        self._hard_state = HardState()
        self._snapshot = EMPTY_SNAPSHOT

    def last_index(self) -> int:
        return self._entries.last_index()

    def last_term(self) -> int:
        return self._entries.last_term()

    def term_at(self, index: int) -> Optional[int]:
        return self._entries.term_at(index)

    def entry(self, index: int) -> LogEntry:
        return self._entries.entry(index)

    def entries(self, lo: int, hi: int) -> List[LogEntry]:
        return self._entries.entries(lo, hi)

    def batch(self, lo: int, max_count: int, max_bytes: int) -> List[LogEntry]:
        return self._entries.batch(lo, max_count, max_bytes)

    def slices(self, lo: int, hi: int):
        return self._entries.slices(lo, hi)

    def collect_applies(self, lo: int, hi: int, out: list, factory) -> None:
        self._entries.collect_applies(lo, hi, out, factory)

    def append(self, entries: Sequence[LogEntry]) -> None:
        self._entries.append(entries)

    def append_commands(self, term: int, kind: int, commands: List[bytes]) -> int:
        return self._entries.append_commands(term, kind, commands)

    def truncate(self, from_index: int) -> None:
        self._entries.truncate(from_index)

    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def sync(self) -> None:
        pass

    def snapshot_index(self) -> int:
        return self._snapshot.index

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.index < self._snapshot.index:
            raise ValueError(
                f"apply_snapshot: index {snapshot.index} is older than the current snapshot {self._snapshot.index}"
            )
        self._entries.compact(snapshot.index, snapshot.term)
        self._snapshot = snapshot
