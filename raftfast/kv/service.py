"""KVService: the client port in front of a KVStore replicated by a RaftServer.

Writes: each request is validated on arrival; the write frames that arrive in one loop
iteration, from every connection, are proposed as ONE Raft entry (BATCH_TAG + the frames as
received), and each is answered when that entry is applied. What waits for an entry is kept by
its log index as runs of (connection, number of requests): applying the entry yields the
response frames of each run joined in one buffer (`apply_runs`; the request id is in each
frame), written to the run's connection. No per-write bookkeeping or objects. When this node stops being leader every pending write fails with NOT_LEADER, so the
client retries at the new leader with the same (client id, seq); the session table makes that
safe whether or not the first attempt was committed.

Reads: the gets that arrive in one iteration share one ReadIndex round (Event.Read) and are
served from local state on Action.ReadReady.

Bad input (a frame that is not a valid request, or larger than `max_request`) closes that
connection with a logged reason; nothing else changes.

Security (`security=ClientPortSecurity`): the port is TLS, a connection is served only once it
has an identity (a client certificate, or an AUTH token: `gate.py`), and admin requests
(membership, leadership transfer) need the admin role. `ClientLimits` (`limits.py`) bounds the
pending requests and cuts off requests that trickle in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from itertools import count
from typing import Dict, Hashable, List, Optional, Set, Tuple

from ..errors import NotLeaderError
from ..events import Event
from ..types import NodeId, Role
from ..runtime.address import Address
from ..runtime.server import RaftServer
from ..runtime.transfer import transfer_leadership
from ..security.auth import Identity
from ..security.listener import SecureListener
from .protocol import (
    ADMIN_OPS,
    BATCH_TAG,
    REQUEST,
    Op,
    ProtocolError,
    Status,
    WRITE_OPS,
    check_request,
    encode_not_leader,
    encode_response,
)
from ._apply import scan_writes
from .errors import SnapshotFormatError
from .gate import AuthGate, ClientPortSecurity
from .limits import MAX_PENDING, REQUEST_TIMEOUT, ClientLimits
from .store import KVStore

__all__ = ["KVService"]

logger = logging.getLogger("raftfast.kv.service")

_LEADER = Role.LEADER
_GET = Op.GET
_STATUS = Op.STATUS
_OK = Status.OK
_NOT_FOUND = Status.NOT_FOUND
_ERROR = Status.ERROR
_MEMBERSHIP = {
    Op.ADD_SERVER: Event.AddServer,
    Op.REMOVE_SERVER: Event.RemoveServer,
    Op.ADD_LEARNER: Event.AddLearner,
    Op.PROMOTE_LEARNER: Event.PromoteLearner,
}
_MAX_ENTRY = 4 << 20  # bytes of requests per proposed entry
_LENGTH_OP_RID = struct.Struct("<IBI")  # the start of a request frame
_monotonic = time.monotonic


class KVService:
    """Implements `raftfast.runtime.Application` for a KVStore, and serves the client port."""

    def __init__(self, store: Optional[KVStore] = None, *, max_request: int = 1 << 20,
                 security: Optional[ClientPortSecurity] = None, max_pending: int = MAX_PENDING,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.store = store if store is not None else KVStore()
        self.max_request = max_request
        self.security = security
        self.limits = ClientLimits(self, max_pending=max_pending, request_timeout=request_timeout)
        self.raft: Optional[RaftServer] = None
        self.address: Optional[Address] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._listener: Optional[SecureListener] = None
        self._connections: Set["_Connection"] = set()
        # Write frames received since the last turn, one chunk per run of one connection's
        # requests, and the runs: [(connection, number of requests)], parallel to the chunks.
        self._writes: List[bytes] = []
        self._runs: List[Tuple["_Connection", int]] = []
        self._write_bytes = 0
        # Proposed entries awaiting their apply: log index -> (command, runs).
        self._proposed: Dict[int, Tuple[bytes, List[Tuple["_Connection", int]]]] = {}
        self._reads: List[Tuple["_Connection", int, bytes]] = []
        self._read_batches: Dict[int, List[Tuple["_Connection", int, bytes]]] = {}
        self._read_ids = count(1)
        self._dirty: List["_Connection"] = []
        self._is_leader = False
        # Connections answered since the last drain that have sent no write since (the leader
        # waits a moment for their next requests: RaftServer._answers_due).
        self._answered: Set["_Connection"] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self, raft: RaftServer) -> None:
        self.raft = raft
        self._is_leader = raft.node.is_leader()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Serve clients on `host:port` (0 = any free port); returns the bound address."""
        security = self.security
        if security is not None:
            label = f"node {self.raft.id if self.raft else '?'} client port"
            self._listener = SecureListener(
                security.context,
                lambda: AuthGate(security, lambda: _Connection(self), label=label, max_request=self.max_request),
                label=label, handshake_timeout=security.auth_timeout,
            )
            self.address = await self._listener.start(host, port)
        else:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(lambda: _Connection(self), host, port)
            self.address = Address(host, self._server.sockets[0].getsockname()[1])
        self.limits.start()
        return self.address

    async def stop(self) -> None:
        self.limits.stop()
        if self._listener is not None:
            self._listener.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.transport.abort()  # type: ignore[union-attr]
        if self._server is not None:
            await self._server.wait_closed()

    # -- Application: called by the RaftServer ---------------------------------------------

    def awaiting_input(self) -> bool:
        return bool(self._answered)

    def drain(self, events: List[object]) -> None:
        self._answered.clear()
        writes = self._writes
        if writes:
            runs = self._runs
            self._writes = []
            self._runs = []
            # The server steps these events right away: accepted, the proposals take the next
            # indexes, in order (apply() checks each index holds the command proposed for it).
            index = self.raft.node.log.last_index() + 1  # type: ignore[union-attr]
            proposed = self._proposed
            if self._write_bytes <= _MAX_ENTRY:
                command = BATCH_TAG + b"".join(writes)
                events.append(Event.Propose(command))
                proposed[index] = (command, runs)
            else:  # keep entries (and so AppendEntries frames) moderate
                batch: List[bytes] = [BATCH_TAG]
                batch_runs: List[Tuple["_Connection", int]] = []
                size = 0
                for chunk, run in zip(writes, runs):
                    if size and size + len(chunk) > _MAX_ENTRY:
                        command = b"".join(batch)
                        events.append(Event.Propose(command))
                        proposed[index] = (command, batch_runs)
                        index += 1
                        batch, batch_runs, size = [BATCH_TAG], [], 0
                    batch.append(chunk)
                    batch_runs.append(run)
                    size += len(chunk)
                command = b"".join(batch)
                events.append(Event.Propose(command))
                proposed[index] = (command, batch_runs)
            self._write_bytes = 0
        if self._reads:
            read_id = next(self._read_ids)
            self._read_batches[read_id] = self._reads
            self._reads = []
            events.append(Event.Read(read_id))

    def apply(self, index: int, command: bytes) -> None:
        proposed = self._proposed.pop(index, None) if self._proposed else None
        if proposed is None:
            self.store.apply_batch(command, None)
            return
        mine, runs = proposed
        if mine is not command and mine != command:
            # another leader's entry took the index: ours was lost (normally answered already,
            # when leadership moved)
            self._fail_batch(mine, runs, lambda rid: self._not_leader(rid, self.raft.node.leader))  # type: ignore[union-attr]
            self.store.apply_batch(command, None)
            return
        # one joined buffer per run, built by the kernel: no object per response
        answered = self._answered
        for (conn, _), replies in zip(runs, self.store.apply_runs(command, [n for _, n in runs])):
            conn.reply(replies)
            answered.add(conn)

    def read_ready(self, request_id: Hashable) -> None:
        get = self.store.data.get
        for conn, rid, key in self._read_batches.pop(request_id, ()):  # type: ignore[call-overload]
            value = get(key)
            if value is None:
                conn.reply(encode_response(rid, _NOT_FOUND))
            else:
                conn.reply(encode_response(rid, _OK, value))

    def read_failed(self, request_id: Hashable, leader: Optional[NodeId]) -> None:
        self._fail_reads(self._read_batches.pop(request_id, []), leader)  # type: ignore[call-overload]

    def rejected(self, event: object, error: Exception) -> None:
        leader = error.leader if isinstance(error, NotLeaderError) else None
        if type(event) is Event.Read:
            self._fail_reads(self._read_batches.pop(event.request_id, []), leader)
        elif type(event) is Event.Propose:
            command = event.command
            for index, (mine, runs) in list(self._proposed.items()):
                if mine is command:
                    del self._proposed[index]
                    if isinstance(error, NotLeaderError):
                        self._fail_batch(mine, runs, lambda rid: self._not_leader(rid, leader))
                    else:
                        message = str(error).encode()
                        self._fail_batch(mine, runs, lambda rid: encode_response(rid, _ERROR, message))
                    break

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def restore(self, data: bytes) -> None:
        try:
            self.store.restore(data)
        except SnapshotFormatError as exc:
            raise RuntimeError(f"cannot restore the key-value snapshot: {exc}") from exc

    def role_changed(self, role: Role, term: int, leader: Optional[NodeId]) -> None:
        was_leader = self._is_leader
        self._is_leader = role is _LEADER
        if was_leader and not self._is_leader and (self._proposed or self._writes):
            # Entries proposed in the old term may be lost: fail them now, retryable with the
            # same (client id, seq); a retry of one that did commit gets the remembered result.
            batches = list(self._proposed.values())
            if self._writes:
                batches.append((BATCH_TAG + b"".join(self._writes), self._runs))
            self._proposed = {}
            self._writes, self._runs, self._write_bytes = [], [], 0
            failed = sum(n for _, runs in batches for _, n in runs)
            logger.info("node %d: no longer leader (term %d): %d pending writes answered NOT_LEADER",
                        self.raft.id, term, failed)  # type: ignore[union-attr]
            for command, runs in batches:
                self._fail_batch(command, runs, lambda rid: self._not_leader(rid, leader))

    def flush(self) -> None:
        dirty = self._dirty
        if dirty:
            self._dirty = []
            for conn in dirty:
                conn.flush()

    # -- helpers -----------------------------------------------------------------------------

    def pending_requests(self) -> int:
        """Requests received and not yet answered: writes and reads (for ClientLimits)."""
        writes = sum(n for _, runs in self._proposed.values() for _, n in runs) + sum(n for _, n in self._runs)
        return writes + len(self._reads) + sum(map(len, self._read_batches.values()))

    def _not_leader(self, rid: int, leader: Optional[NodeId]) -> bytes:
        return encode_not_leader(rid, leader, self.raft.client_address_of(leader))  # type: ignore[union-attr]

    @staticmethod
    def _fail_batch(command: bytes, runs: List[Tuple["_Connection", int]], reply_for) -> None:
        """Answer every request of a batch entry with `reply_for(request id)`."""
        rids = _batch_rids(command)
        start = 0
        for conn, n in runs:
            conn.reply_many([reply_for(rid) for rid in rids[start : start + n]])
            start += n

    def _fail_reads(self, reads: List[Tuple["_Connection", int, bytes]], leader: Optional[NodeId]) -> None:
        for conn, rid, _ in reads:
            conn.reply(self._not_leader(rid, leader))

    def _status(self, key: bytes = b"") -> bytes:
        status = self.raft.status()  # type: ignore[union-attr]
        status["keys"] = len(self.store.data)
        status["sessions"] = len(self.store.sessions)
        if key == b"digest":  # on request only: it reads the whole store
            status["digest"] = self.store.digest()
        return json.dumps(status).encode()

    def _change_membership(self, conn: "_Connection", rid: int, op: int, key: bytes) -> None:
        """An admin request: a membership change or a leadership transfer."""
        if self.security is not None:
            label = f"node {self.raft.id} client port"  # type: ignore[union-attr]
            refusal = self.security.admin_refusal(conn.identity, op, conn.peer, label)
            if refusal is not None:
                conn.reply(encode_response(rid, _ERROR, refusal))
                return
        try:
            node_id = int(key)
        except ValueError:
            conn.reply(encode_response(rid, _ERROR, b"the key must be a node id"))
            return
        if op == Op.TRANSFER_LEADER:
            change = transfer_leadership(self.raft, node_id)  # type: ignore[arg-type]
        else:
            change = self.raft.change_membership(_MEMBERSHIP[op](node_id))  # type: ignore[union-attr]
        task = asyncio.get_running_loop().create_task(change)
        task.add_done_callback(lambda t: self._membership_done(conn, rid, t))

    def _membership_done(self, conn: "_Connection", rid: int, task: asyncio.Task) -> None:
        exc = task.exception() if not task.cancelled() else RuntimeError("cancelled")
        if exc is None:
            conn.reply(encode_response(rid, _OK))
        elif isinstance(exc, NotLeaderError):
            conn.reply(self._not_leader(rid, exc.leader))
        else:
            conn.reply(encode_response(rid, _ERROR, f"{type(exc).__name__}: {exc}".encode()))
        self.raft.wake()  # type: ignore[union-attr]  # the turn flushes the reply


class _Connection(asyncio.Protocol):
    """One client connection: parses pipelined requests, buffers replies until the turn ends."""

    def __init__(self, service: KVService) -> None:
        self.service = service
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = b""
        self.out: List[bytes] = []
        self.peer = "?"
        self.identity: Optional[Identity] = None  # set by the AuthGate on a secured port
        self.partial_since = 0.0  # when the request now in `buffer` began to arrive (ClientLimits)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = str(transport.get_extra_info("peername"))
        self.service._connections.add(self)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.service._connections.discard(self)
        self.service._answered.discard(self)
        self.out = []

    def pause_writing(self) -> None:
        # the client is not reading its replies: stop reading its requests until it does
        self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.transport.resume_reading()  # type: ignore[union-attr]

    def reply(self, frame: bytes) -> None:
        out = self.out
        if not out:
            self.service._dirty.append(self)
        out.append(frame)

    def reply_many(self, frames: List[bytes]) -> None:
        out = self.out
        if not out:
            self.service._dirty.append(self)
        out += frames

    def flush(self) -> None:
        out = self.out
        if out:
            self.out = []
            transport = self.transport
            if not transport.is_closing():  # type: ignore[union-attr]
                # one joined buffer: cheaper than writelines over many 9-byte frames
                transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        service = self.service
        max_request = service.max_request
        unpack = REQUEST.unpack_from
        head = REQUEST.size
        end = len(data)
        pos = 0
        leader = service._is_leader
        writes: List[bytes] = []
        runs: List[Tuple[_Connection, int]] = []
        error: Optional[str] = None
        while True:
            if leader:  # the usual requests: runs of valid writes, checked by the kernel
                stop, n = scan_writes(data, pos, max_request)
                if n:
                    writes.append(data[pos:stop] if pos or stop < end else data)
                    runs.append((self, n))
                    pos = stop
            if end - pos < head:
                break
            length, op, rid, cid, _seq, _ack, klen, vlen, elen = unpack(data, pos)
            try:
                check_request(length, op, klen, vlen, elen, max_request)
            except ProtocolError as exc:
                error = str(exc)
                break
            frame_end = pos + 4 + length
            if frame_end > end:
                break
            if op in WRITE_OPS:
                if not leader:
                    self.reply(service._not_leader(rid, service.raft.node.leader))  # type: ignore[union-attr]
                else:  # what scan_writes left at a leader: cid == 0
                    self.reply(encode_response(rid, _ERROR, b"a write needs a non-zero client id"))
            elif op == _GET:
                if leader:
                    service._reads.append((self, rid, data[pos + head : pos + head + klen]))
                else:
                    self.reply(service._not_leader(rid, service.raft.node.leader))  # type: ignore[union-attr]
            elif op == _STATUS:
                self.reply(encode_response(rid, _OK, service._status(data[pos + head : pos + head + klen])))
            elif op in ADMIN_OPS:
                service._change_membership(self, rid, op, data[pos + head : pos + head + klen])
            pos = frame_end
        if error is None and end - pos >= 4 and int.from_bytes(data[pos : pos + 4], "little") > max_request:
            error = f"request of {int.from_bytes(data[pos:pos + 4], 'little')} bytes exceeds the limit of {max_request}"
        self.buffer = data[pos:] if pos < end else b""
        if pos or not self.partial_since:  # a request completed, or a first one began: restart the clock
            self.partial_since = _monotonic() if self.buffer else 0.0
        if writes:
            service._answered.discard(self)
            service._writes += writes
            service._runs += runs
            service._write_bytes += sum(map(len, writes))
        if writes or self.out or service._reads:
            service.raft.wake()  # type: ignore[union-attr]
        if error is not None:
            logger.warning("node %s: closing client connection %s: %s",
                           service.raft.id if service.raft else "?", self.peer, error)
            self.buffer = b""
            self.transport.abort()  # type: ignore[union-attr]


def _batch_rids(batch: bytes) -> List[int]:
    """The request id of every request in a batch entry, in order."""
    unpack = _LENGTH_OP_RID.unpack_from
    rids = []
    pos = 1
    end = len(batch)
    while pos < end:
        length, _op, rid = unpack(batch, pos)
        rids.append(rid)
        pos += 4 + length
    return rids
