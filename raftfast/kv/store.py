"""KVStore: the replicated state machine. Keys and values are bytes.

Client sessions (Raft thesis §6.3): every write carries (client id, seq, ack). The store
remembers the result of each seq a client may still retry, returns it again for a duplicate
instead of applying twice, and forgets results below the client's `ack` (the lowest seq the
client still awaits). The session table is part of the snapshot and is bounded: past
`max_sessions` the least recently active session is evicted, identically on every replica.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from itertools import accumulate
from typing import Dict, List, Optional, Tuple

from ._apply import apply_batch, apply_runs, snapshot_state
from .errors import SnapshotFormatError

__all__ = ["KVStore", "Result", "SnapshotFormatError"]

Result = Tuple[int, bytes]
"""(status, body) of an applied write."""

_SNAPSHOT_MAGIC = b"RFKV"
_SNAPSHOT_VERSION = 1
# The snapshot: the head, every key's length then every value's (little-endian uint32), the
# keys, the values, then each session (head, then each result: head and body). Written by
# `snapshot_state` (`_apply_py`/`_apply_c`), read by `KVStore.restore`.
_SNAPSHOT_HEAD = struct.Struct("<4sBQQ")  # magic, version, #keys, #sessions
_SESSION_HEAD = struct.Struct("<QQI")  # client id, floor, #results
_RESULT_HEAD = struct.Struct("<QBI")  # seq, status, body length


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
        """Replace everything with `snapshot` (b"" = empty); SnapshotFormatError if unreadable."""
        if not snapshot:
            self.data = {}
            self.sessions = {}
            return
        view = memoryview(snapshot)
        try:
            magic, version, nkeys, nsessions = _SNAPSHOT_HEAD.unpack_from(view)
            if magic != _SNAPSHOT_MAGIC or version != _SNAPSHOT_VERSION:
                raise SnapshotFormatError(f"not a version {_SNAPSHOT_VERSION} KV snapshot")
            pos = _SNAPSHOT_HEAD.size
            lens = array("I")
            lens.frombytes(view[pos : pos + 8 * nkeys])
            if len(lens) != 2 * nkeys:
                raise SnapshotFormatError("truncated key table")
            if sys.byteorder == "big":
                lens.byteswap()
            pos += 8 * nkeys
            klens, vlens = lens[:nkeys], lens[nkeys:]
            kbytes, vbytes = sum(klens), sum(vlens)
            if pos + kbytes + vbytes > len(view):
                raise SnapshotFormatError("truncated keys and values")
            keys = _split(snapshot, pos, klens)
            values = _split(snapshot, pos + kbytes, vlens)
            pos += kbytes + vbytes
            sessions: Dict[int, list] = {}
            for _ in range(nsessions):
                cid, floor, nresults = _SESSION_HEAD.unpack_from(view, pos)
                pos += _SESSION_HEAD.size
                results: Dict[int, Result] = {}
                for _ in range(nresults):
                    seq, status, size = _RESULT_HEAD.unpack_from(view, pos)
                    pos += _RESULT_HEAD.size
                    if pos + size > len(view):
                        raise SnapshotFormatError("truncated session result")
                    results[seq] = (status, snapshot[pos : pos + size])
                    pos += size
                sessions[cid] = [floor, results]
            if pos != len(view):
                raise SnapshotFormatError(f"{len(view) - pos} trailing bytes")
        except struct.error as exc:
            raise SnapshotFormatError(f"truncated snapshot: {exc}") from None
        self.data = dict(zip(keys, values))
        self.sessions = sessions


def _split(buffer: bytes, start: int, lengths: array) -> List[bytes]:
    ends = list(accumulate(lengths, initial=start))
    return [buffer[a:b] for a, b in zip(ends, ends[1:])]
