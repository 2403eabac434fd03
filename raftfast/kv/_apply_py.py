"""The key-value layer's per-write loops: the pure twin of `_apply_c`.

`apply_batch(data, sessions, max_sessions, batch, replies, frames)` is `KVStore.apply_batch`
over the store's dicts (see `raftfast.kv.store`): the one loop every replica runs for every
write; `apply_runs` is the same with the responses joined per run of requests (what a leader
writes to each connection). `scan_writes(data, pos, max_request)` is the leader's check of
arriving write frames. `snapshot_state(data, sessions)` is `KVStore.snapshot`, and
`restore_state(snapshot)` reads it back for `KVStore.restore`. All have a compiled twin with the
same results and errors.
"""

from __future__ import annotations

import struct
import sys
from array import array
from itertools import accumulate
from typing import Dict, List, Optional, Tuple

from .errors import SnapshotFormatError
from .protocol import BATCH_TAG, NO_VALUE, REQUEST, RESPONSE, Op, Status

__all__ = ["OK", "CAS_FAILED", "STALE", "apply_batch", "apply_runs", "restore_state", "scan_writes", "snapshot_state"]

Result = Tuple[int, bytes]

OK: Result = (Status.OK, b"")
CAS_FAILED: Result = (Status.CAS_FAILED, b"")
STALE: Result = (Status.ERROR, b"stale sequence number: the client already acknowledged its reply")
_PUT, _DELETE, _APPEND = int(Op.PUT), int(Op.DELETE), int(Op.APPEND)
_WRITE_OPS = frozenset((_PUT, _DELETE, int(Op.CAS), _APPEND))
_HEAD_BODY = REQUEST.size - 4


def scan_writes(data: bytes, pos: int, max_request: int) -> Tuple[int, int]:
    """(end, count): the run of complete, well-formed write frames with a non-zero client id
    that starts at `pos` in `data` ends at `end` and holds `count` of them. It stops at the
    first frame that is anything else, or incomplete; that one is the caller's to judge."""
    unpack = REQUEST.unpack_from
    head = REQUEST.size
    end = len(data)
    count = 0
    while end - pos >= head:
        length, op, _rid, cid, _seq, _ack, klen, vlen, elen = unpack(data, pos)
        frame_end = pos + 4 + length
        if (
            op not in _WRITE_OPS
            or not cid
            or length > max_request
            or length != _HEAD_BODY + klen + vlen + (0 if elen == NO_VALUE else elen)
            or frame_end > end
        ):
            break
        pos = frame_end
        count += 1
    return pos, count


def apply_batch(data: Dict[bytes, bytes], sessions: Dict[int, list], max_sessions: int, batch: bytes,
                replies: Optional[List[tuple]], frames: Optional[List[bytes]] = None) -> None:
    """Apply a batch entry (BATCH_TAG + write request frames) to `data` and `sessions` (client
    id -> [floor, {seq: result}], least recently active first, at most `max_sessions`). When
    `replies` is a list, append (client id, seq, result) for every request, in order; when
    `frames` is, append each request's response frame instead."""
    if batch[:1] != BATCH_TAG:
        return  # not ours (an empty command, say): nothing to apply
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
                if len(sessions) >= max_sessions:
                    del sessions[next(iter(sessions))]
            sessions[cid] = session  # most recently active last
            floor = session[0]
            results = session[1]
        if seq < floor:
            result = STALE
        else:
            result = results.get(seq)
            if result is None:
                vpos = kpos + klen
                if op == put:
                    data[batch[kpos:vpos]] = batch[vpos : vpos + vlen]
                    result = OK
                else:
                    result = _apply_other(data, op, batch[kpos:vpos], batch, vpos, vlen, elen)
                results[seq] = result
        if ack > floor:  # forget the results the client acknowledged (seq < ack)
            if ack - floor <= 8:  # the usual step: a few results
                pop = results.pop
                while floor < ack:
                    pop(floor, None)
                    floor += 1
            else:
                if ack - floor <= len(results):
                    pop = results.pop
                    for old in range(floor, ack):
                        pop(old, None)
                else:  # a large jump: filtering is cheaper than walking the gap
                    results = {s: r for s, r in results.items() if s >= ack}
                    session[1] = results  # type: ignore[index]
                floor = ack
        if frames is not None:
            status, body = result
            frames.append(pack_response(5 + len(body), rid, status) + body if body else pack_response(5, rid, status))
        elif replies is not None:
            replies.append((cid, seq, result))
    if session is not None:
        session[0] = floor


def apply_runs(data: Dict[bytes, bytes], sessions: Dict[int, list], max_sessions: int, batch: bytes,
               counts: List[int]) -> List[bytes]:
    """Apply a batch entry as `apply_batch` does and return its response frames joined per run:
    one bytes for each count in `counts`, holding the responses of the next that many requests,
    in order. Requests past the counts' sum are applied and not answered; a count the batch
    does not fill gets the responses left (b"" for none). ValueError, with nothing applied,
    for a count that is negative or above sys.maxsize."""
    for count in counts:
        if not 0 <= count <= sys.maxsize:
            raise ValueError(f"apply_runs: bad count {count!r}")
    frames: List[bytes] = []
    apply_batch(data, sessions, max_sessions, batch, None, frames)
    joined = []
    start = 0
    for count in counts:
        joined.append(b"".join(frames[start : start + count]))
        start += count
    return joined


def _apply_other(data: Dict[bytes, bytes], op: int, key: bytes, batch: bytes, vpos: int, vlen: int, elen: int) -> Result:
    """DELETE, APPEND and CAS (PUT is inlined in apply_batch)."""
    if op == _DELETE:
        data.pop(key, None)
        return OK
    if op == _APPEND:
        data[key] = data.get(key, b"") + batch[vpos : vpos + vlen]
        return OK
    # cas
    current = data.get(key)
    if elen == NO_VALUE:
        matches = current is None
    else:
        epos = vpos + vlen
        matches = current == batch[epos : epos + elen]
    if matches:
        data[key] = batch[vpos : vpos + vlen]
        return OK
    return CAS_FAILED


# -- snapshots ---------------------------------------------------------------------------------

_SNAPSHOT_HEAD = struct.Struct("<4sBQQ")  # magic, version, #keys, #sessions
_SESSION_HEAD = struct.Struct("<QQI")  # client id, floor, #results
_RESULT_HEAD = struct.Struct("<QBI")  # seq, status, body length
_U32 = 1 << 32
_U64 = 1 << 64


def _check_bytes_types(items, what: str) -> None:
    """TypeError unless every item is bytes (one isinstance test per distinct type)."""
    kinds = list(map(type, items))
    if kinds.count(bytes) == len(kinds):  # the usual case, in one quick pass
        return
    for kind in set(kinds):
        if not issubclass(kind, bytes):
            raise TypeError(f"snapshot: a {what} must be bytes, not {kind.__name__}")


def _check_uint(value, limit: int, what: str) -> None:
    if not isinstance(value, int):
        raise TypeError(f"snapshot: {what} must be an int, not {type(value).__name__}")
    if not 0 <= value < limit:
        raise ValueError(f"snapshot: {what} {value} out of range")


def snapshot_state(data: Dict[bytes, bytes], sessions: Dict[int, list]) -> bytes:
    """`KVStore.snapshot`: `data` (bytes -> bytes) and `sessions` (client id -> [floor,
    {seq: (status, body)}]) in the snapshot format (see `raftfast.kv.store`).

    TypeError for anything but that structure (a key, value or body that is not bytes, a
    number that is not an int, a session that is not a list or a result that is not a tuple);
    ValueError for a session or result of the wrong length, a number out of its field's
    range, or a key, value or body of 4 GiB or more. Type errors in the keys and values are
    found before size errors there; the sessions are checked in order, each field's type before
    its range."""
    if not isinstance(data, dict):
        raise TypeError(f"snapshot: data must be a dict, not {type(data).__name__}")
    if not isinstance(sessions, dict):
        raise TypeError(f"snapshot: sessions must be a dict, not {type(sessions).__name__}")
    keys = list(data)
    values = list(data.values())
    _check_bytes_types(keys, "key")
    _check_bytes_types(values, "value")
    try:
        klens = array("I", map(len, keys))
        vlens = array("I", map(len, values))
    except OverflowError:
        raise ValueError("snapshot: a key or value of 4 GiB or more") from None
    if sys.byteorder == "big":
        klens.byteswap()
        vlens.byteswap()
    parts = [
        _SNAPSHOT_HEAD.pack(b"RFKV", 1, len(keys), len(sessions)),
        klens.tobytes(), vlens.tobytes(), b"".join(keys), b"".join(values),
    ]
    append = parts.append
    session_head = _SESSION_HEAD.pack
    result_head = _RESULT_HEAD.pack
    for cid, session in sessions.items():
        _check_uint(cid, _U64, "client id")
        if not isinstance(session, list):
            raise TypeError(f"snapshot: session {cid} must be a list, not {type(session).__name__}")
        if len(session) != 2:
            raise ValueError(f"snapshot: session {cid} must be [floor, results], not {len(session)} items")
        floor, results = session
        _check_uint(floor, _U64, "session floor")
        if not isinstance(results, dict):
            raise TypeError(f"snapshot: session {cid} results must be a dict, not {type(results).__name__}")
        if len(results) >= _U32:
            raise ValueError(f"snapshot: session {cid} has too many results")
        append(session_head(cid, floor, len(results)))
        for seq, result in results.items():
            _check_uint(seq, _U64, "result seq")
            if not isinstance(result, tuple):
                raise TypeError(f"snapshot: result {seq} must be a tuple, not {type(result).__name__}")
            if len(result) != 2:
                raise ValueError(f"snapshot: result {seq} must be (status, body), not {len(result)} items")
            status, body = result
            _check_uint(status, 256, "result status")
            if not isinstance(body, bytes):
                raise TypeError(f"snapshot: a result body must be bytes, not {type(body).__name__}")
            if len(body) >= _U32:
                raise ValueError("snapshot: a result body of 4 GiB or more")
            append(result_head(seq, status, len(body)))
            append(body)
    return b"".join(parts)


def restore_state(snapshot: bytes) -> Tuple[Dict[bytes, bytes], Dict[int, list]]:
    """`KVStore.restore` of a non-empty snapshot: (data, sessions) as `snapshot_state` took
    them, in the snapshot's order. A key written twice keeps its first place and its last
    value, as does a client id, and a seq within a session.

    TypeError unless `snapshot` is bytes; SnapshotFormatError for anything but the snapshot
    format (b"" included: `KVStore.restore` handles the empty store), found before anything
    its counts or lengths claim is allocated."""
    if not isinstance(snapshot, bytes):
        raise TypeError(f"restore: the snapshot must be bytes, not {type(snapshot).__name__}")
    view = memoryview(snapshot)
    try:
        magic, version, nkeys, nsessions = _SNAPSHOT_HEAD.unpack_from(view)
        if magic != b"RFKV" or version != 1:
            raise SnapshotFormatError("not a version 1 KV snapshot")
        pos = _SNAPSHOT_HEAD.size
        if 8 * nkeys > len(view) - pos:  # before frombytes, which refuses a partial length
            raise SnapshotFormatError("truncated key table")
        lens = array("I")
        lens.frombytes(view[pos : pos + 8 * nkeys])
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
    return dict(zip(keys, values)), sessions


def _split(buffer: bytes, start: int, lengths: array) -> List[bytes]:
    ends = list(accumulate(lengths, initial=start))
    return [buffer[a:b] for a, b in zip(ends, ends[1:])]
