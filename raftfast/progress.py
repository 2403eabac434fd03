"""Per-peer replication progress, as a leader sees it (etcd's tracker.Progress).

PROBE: we do not know where the peer's log matches ours; one AppendEntries at a time.
REPLICATE: the peer is in step; pipeline up to `max_inflight` messages, advancing `next`
optimistically. SNAPSHOT: the peer needs entries we compacted; wait for its snapshot reply.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflight",
        "pending_snapshot",
        "snapshot_elapsed",
        "recent_active",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        # last index carried by each AppendEntries in flight, oldest first
        self.inflight: Deque[int] = deque()
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.recent_active = False

    def become_probe(self) -> None:
        # after a snapshot, resume right above it; otherwise right above what we know matches
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_elapsed = 0
        self.probe_sent = False
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """The peer holds our log through `index`. Returns whether `match` advanced."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, match_hint: int) -> bool:
        """The peer rejected an AppendEntries whose prev index was `rejected`. Returns False
        when the rejection is stale (it answers a message older than our current view)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self, max_inflight: int) -> bool:
        state = self.state
        if state == ProgressState.PROBE:
            return self.probe_sent
        if state == ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"inflight={len(self.inflight)}, probe_sent={self.probe_sent})"
        )
