"""SimLog: a RaftLog whose writes are volatile until `sync()`, so a simulated crash can lose them.

The model is a durable `MemoryLog` plus the list of writes made since the last `sync()`. Reads
see every write at once (a second `MemoryLog`, the volatile view); `sync()` replays the pending
writes onto the durable log; `crash()` returns a fresh `SimLog` holding only the durable state.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from ..log import MemoryLog
from ..types import HardState, LogEntry, Snapshot

_Write = Tuple[str, Any]


def _copy(log: MemoryLog) -> MemoryLog:
    """An independent MemoryLog with the same snapshot, entries and hard state."""
    fresh = MemoryLog()
    snapshot = log.snapshot()
    if snapshot.index:
        fresh.apply_snapshot(snapshot)
    if log.last_index() > snapshot.index:
        fresh.append(log.entries(snapshot.index + 1, log.last_index()))
    fresh.set_hard_state(log.hard_state())
    return fresh


class SimLog:
    """A RaftLog (the methods of MemoryLog) with crash semantics. `syncs` counts `sync()` calls
    and `writes` counts writes, so an observer can tell cheaply that nothing changed."""

    __slots__ = ("_durable", "_view", "_pending", "syncs", "writes")

    def __init__(self, durable: Optional[MemoryLog] = None) -> None:
        self._durable = durable if durable is not None else MemoryLog()
        self._view = _copy(self._durable)
        self._pending: List[_Write] = []
        self.syncs = 0
        self.writes = 0

    # -- crash model -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Writes made since the last `sync()`: what a crash now would lose."""
        return len(self._pending)

    def crash(self) -> "SimLog":
        """The log a restarted node finds: only what was synced. This log is left untouched."""
        return type(self)(_copy(self._durable))

    def sync(self) -> None:
        durable = self._durable
        for method, arg in self._pending:
            getattr(durable, method)(arg)
        self._pending.clear()
        self.syncs += 1

    # -- reads: the volatile view ----------------------------------------------------------

    def last_index(self) -> int:
        return self._view.last_index()

    def last_term(self) -> int:
        return self._view.last_term()

    def term_at(self, index: int) -> Optional[int]:
        return self._view.term_at(index)

    def entry(self, index: int) -> LogEntry:
        return self._view.entry(index)

    def entries(self, lo: int, hi: int) -> List[LogEntry]:
        return self._view.entries(lo, hi)

    def batch(self, lo: int, max_count: int, max_bytes: int) -> List[LogEntry]:
        return self._view.batch(lo, max_count, max_bytes)

    def hard_state(self) -> HardState:
        return self._view.hard_state()

    def snapshot_index(self) -> int:
        return self._view.snapshot_index()

    def snapshot(self) -> Snapshot:
        return self._view.snapshot()

    # -- writes: applied to the view now, recorded for the durable log at sync -------------

    def append(self, entries: Sequence[LogEntry]) -> None:
        # Copy the entries: the caller may reuse the objects before the sync replays them.
        copied = [LogEntry(e.term, e.index, e.kind, e.command) for e in entries]
        self._view.append(copied)
        self._pending.append(("append", copied))
        self.writes += 1

    def truncate(self, from_index: int) -> None:
        self._view.truncate(from_index)
        self._pending.append(("truncate", from_index))
        self.writes += 1

    def set_hard_state(self, hs: HardState) -> None:
        self._view.set_hard_state(hs)
        self._pending.append(("set_hard_state", hs))
        self.writes += 1

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._view.apply_snapshot(snapshot)
        self._pending.append(("apply_snapshot", snapshot))
        self.writes += 1
