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

from .protocol import BATCH_TAG, NO_VALUE, REQUEST, RESPONSE, Op, Status

__all__ = ["KVStore", "Result", "SnapshotFormatError"]

Result = Tuple[int, bytes]
"""(status, body) of an applied write."""

_OK: Result = (Status.OK, b"")
_CAS_FAILED: Result = (Status.CAS_FAILED, b"")
_STALE: Result = (Status.ERROR, b"stale sequence number: the client already acknowledged its reply")
_PUT, _DELETE, _CAS, _APPEND = Op.PUT, Op.DELETE, Op.CAS, Op.APPEND

_SNAPSHOT_MAGIC = b"RFKV"
_SNAPSHOT_VERSION = 1
_SNAPSHOT_HEAD = struct.Struct("<4sBQQ")  # magic, version, #keys, #sessions
_SESSION_HEAD = struct.Struct("<QQI")  # client id, floor, #results
_RESULT_HEAD = struct.Struct("<QBI")  # seq, status, body length


class SnapshotFormatError(ValueError):
    """Snapshot bytes that this version cannot read."""


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
        if batch[:1] != BATCH_TAG:
            return  # not ours (an empty command, say): nothing to apply
        data = self.data
        sessions = self.sessions
        unpack = REQUEST.unpack_from
        pack_response = RESPONSE.pack
        head = REQUEST.size
        end = len(batch)
        put = _PUT
        pos = 1
        last_cid = -1
        session: Optional[list] = None
        floor = 0
        results: Dict[int, Result] = {}
        while pos < end:
            length, op, rid, cid, seq, ack, klen, vlen, elen = unpack(batch, pos)
            kpos = pos + head
            pos += 4 + length
            if cid != last_cid:  # a batch holds runs of one client's requests
                if session is not None:
                    session[0] = floor
                last_cid = cid
                session = sessions.pop(cid, None)
                if session is None:
                    session = [0, {}]
                    if len(sessions) >= self.max_sessions:
                        del sessions[next(iter(sessions))]
                sessions[cid] = session  # most recently active last
                floor = session[0]
                results = session[1]
            if seq < floor:
                result = _STALE
            else:
                result = results.get(seq)
                if result is None:
                    vpos = kpos + klen
                    if op == put:
                        data[batch[kpos:vpos]] = batch[vpos : vpos + vlen]
                        result = _OK
                    else:
                        result = self._apply_other(op, batch[kpos:vpos], batch, vpos, vlen, elen)
                    results[seq] = result
            if ack > floor:  # forget the results the client acknowledged (seq < ack)
                if ack - floor <= 8:  # the usual step: a few results
                    pop = results.pop
                    while floor < ack:
                        pop(floor, None)
                        floor += 1
                else:
                    session[0] = floor  # type: ignore[index]
                    _forget(session, ack)  # type: ignore[arg-type]
                    results = session[1]  # type: ignore[index]
                    floor = ack
            if frames is not None:
                status, body = result
                frames.append(pack_response(5 + len(body), rid, status) + body if body else pack_response(5, rid, status))
            elif replies is not None:
                replies.append((cid, seq, result))
        if session is not None:
            session[0] = floor

    def _apply_other(self, op: int, key: bytes, batch: bytes, vpos: int, vlen: int, elen: int) -> Result:
        """DELETE, APPEND and CAS (PUT is inlined in apply_batch)."""
        data = self.data
        if op == _DELETE:
            data.pop(key, None)
            return _OK
        if op == _APPEND:
            data[key] = data.get(key, b"") + batch[vpos : vpos + vlen]
            return _OK
        # cas
        current = data.get(key)
        if elen == NO_VALUE:
            matches = current is None
        else:
            epos = vpos + vlen
            matches = current == batch[epos : epos + elen]
        if matches:
            data[key] = batch[vpos : vpos + vlen]
            return _OK
        return _CAS_FAILED

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
        data = self.data
        keys = list(data)
        values = list(data.values())
        klens = array("I", map(len, keys))
        vlens = array("I", map(len, values))
        if sys.byteorder == "big":
            klens.byteswap()
            vlens.byteswap()
        parts = [
            _SNAPSHOT_HEAD.pack(_SNAPSHOT_MAGIC, _SNAPSHOT_VERSION, len(keys), len(self.sessions)),
            klens.tobytes(), vlens.tobytes(), b"".join(keys), b"".join(values),
        ]
        for cid, (floor, results) in self.sessions.items():
            parts.append(_SESSION_HEAD.pack(cid, floor, len(results)))
            for seq, (status, body) in results.items():
                parts.append(_RESULT_HEAD.pack(seq, status, len(body)))
                parts.append(body)
        return b"".join(parts)

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


def _forget(session: list, ack: int) -> None:
    """Drop results the client acknowledged (seq < ack)."""
    floor, results = session
    if ack - floor <= len(results):
        pop = results.pop
        for seq in range(floor, ack):
            pop(seq, None)
    else:  # a large jump: filtering is cheaper than walking the gap
        session[1] = {seq: r for seq, r in results.items() if seq >= ack}
    session[0] = ack


def _split(buffer: bytes, start: int, lengths: array) -> List[bytes]:
    ends = list(accumulate(lengths, initial=start))
    return [buffer[a:b] for a, b in zip(ends, ends[1:])]
