"""KVStore: the replicated state machine. Keys and values are bytes.

Client sessions (Raft thesis §6.3): every write carries (client id, seq, ack). The store
remembers the result of each seq a client may still retry, returns it again for a duplicate
instead of applying twice, and forgets results below the client's `ack` (the lowest seq the
client still awaits). The session table is part of the snapshot and is bounded: past
`max_sessions` the least recently active session is evicted, identically on every replica.
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Tuple

from ._apply import apply_batch, apply_runs, restore_state, snapshot_state
from .errors import SnapshotFormatError

__all__ = ["KVStore", "Result", "SnapshotFormatError"]

Result = Tuple[int, bytes]
"""(status, body) of an applied write."""

# The snapshot: the head (<4sBQQ: b"RFKV", version 1, #keys, #sessions), every key's length
# then every value's (little-endian uint32), the keys, the values, then each session (head
# <QQI: client id, floor, #results; then each result: head <QBI: seq, status, body length, and
# body). Written by `snapshot_state`, read by `restore_state` (`_apply_py`/`_apply_c`).


class KVStore:
    __slots__ = ("data", "sessions", "max_sessions")

    def __init__(self, max_sessions: int = 100_000) -> None:
        self.data: Dict[bytes, bytes] = {}
        # client id -> [floor, {seq: result}]; dict order is least to most recently active
        self.sessions: Dict[int, list] = {}
        self.max_sessions = max_sessions

    def get(self, key: bytes) -> Optional[bytes]:
        return self.data.get(key)

    def apply_batch(self, batch: bytes, replies: Optional[List[tuple]], frames: Optional[List[bytes]] = None) -> None:
        """Apply a batch entry (BATCH_TAG + write request frames). When `replies` is a list,
        append (client id, seq, result) for every request, in order; when `frames` is, append
        the response frame for every request instead (its request id, status and body)."""
        apply_batch(self.data, self.sessions, self.max_sessions, batch, replies, frames)

    def apply_runs(self, batch: bytes, counts: List[int]) -> List[bytes]:
        """Apply a batch entry and return its response frames joined per run of requests: one
        bytes for each count, holding the responses of the next that many requests."""
        return apply_runs(self.data, self.sessions, self.max_sessions, batch, counts)

    def digest(self) -> str:
        """A hash of the applied state (keys, values and sessions), independent of insertion
        order: replicas that applied the same entries report the same digest."""
        h = hashlib.sha256()
        for key, value in sorted(self.data.items()):
            h.update(b"%d:%s%d:%s" % (len(key), key, len(value), value))
        for cid, (floor, results) in sorted(self.sessions.items()):
            h.update(b"s%d:%d" % (cid, floor))
            for seq, (status, body) in sorted(results.items()):
                h.update(b"r%d:%d:%d:%s" % (seq, status, len(body), body))
        return h.hexdigest()

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The keys, values and sessions in the snapshot format (below); TypeError or
        ValueError if the store holds anything but bytes keys and values and the sessions
        the apply kernel keeps."""
        return snapshot_state(self.data, self.sessions)

    def restore(self, snapshot: bytes) -> None:
        """Replace everything with `snapshot` (b"" = empty); SnapshotFormatError if unreadable,
        TypeError if not bytes (the keys and values are built from it)."""
        if not snapshot:
            self.data = {}
            self.sessions = {}
            return
        self.data, self.sessions = restore_state(snapshot)
