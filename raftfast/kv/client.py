"""KVClient: the asyncio client library for a raftfast key-value cluster.

    async with KVClient(["127.0.0.1:8001", "127.0.0.1:8002"]) as kv:
        await kv.put(b"k", b"v")
        assert await kv.get(b"k") == b"v"

- Pipelining: any number of requests may be in flight; those issued in one loop iteration go
  out in one write.
- Leader discovery: the client talks to one node at a time; a NOT_LEADER reply names the
  leader and its client address, and the client moves there and resends everything pending.
  With no leader known it tries the next address after a short pause.
- Sessions: the client has a random 63-bit id; each write gets the next seq and keeps it across
  retries, so a retried write is applied at most once.
- Each request has a deadline (`timeout`); past it the call raises KVTimeoutError.
- A secured cluster (TLS on the client port): pass `ssl` (an SSLContext trusting the cluster
  CA, with a client certificate loaded) and/or `token` (sent as AUTH, the first request on
  every connection). `raftfast.security.credentials.ClientCredentials` builds both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from ssl import SSLContext
from typing import Any, Dict, List, Optional, Sequence, Union

from ..runtime.address import Address, parse_address
from .errors import KVError, KVTimeoutError
from .protocol import RESPONSE, Op, Status, WRITE_OPS, decode_not_leader, encode_request

__all__ = ["KVClient"]

logger = logging.getLogger("raftfast.kv.client")

Bytes = Union[bytes, str]
_MAX_RESPONSE = 64 << 20


def _b(value: Bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class _Request:
    __slots__ = ("op", "rid", "key", "value", "expected", "seq", "future", "timer")

    def __init__(self, op: int, rid: int, key: bytes, value: bytes, expected: Optional[bytes], seq: int,
                 future: asyncio.Future) -> None:
        self.op = op
        self.rid = rid
        self.key = key
        self.value = value
        self.expected = expected
        self.seq = seq
        self.future = future
        self.timer: Optional[asyncio.TimerHandle] = None


class KVClient:
    def __init__(
        self,
        addresses: Sequence[Union[str, Address]],
        *,
        timeout: float = 5.0,
        client_id: Optional[int] = None,
        connect_timeout: float = 1.0,
        ssl: Optional[SSLContext] = None,
        token: Optional[bytes] = None,
    ) -> None:
        if not addresses:
            raise ValueError("KVClient needs at least one address")
        self.addresses: List[Address] = [a if isinstance(a, Address) else parse_address(a) for a in addresses]
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ssl = ssl
        self.token = token
        self._last_error = ""  # why the last connection attempt failed, for timeout messages
        self.client_id = client_id if client_id is not None else random.getrandbits(63) or 1
        self._next_seq = 1
        self._open_seqs: set = set()  # seqs of the writes still awaited
        self._low_seq = 1  # no write below this is awaited
        self._next_rid = 1
        self._pending: Dict[int, _Request] = {}
        self._target = 0  # index into self.addresses of the node to use next
        self._conn: Optional[_ClientProtocol] = None
        self._connecting: Optional[asyncio.Task] = None
        self._out: List[bytes] = []
        self._flush_scheduled = False
        self._closed = False

    async def __aenter__(self) -> "KVClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.transport.close()
            self._conn = None
        for request in list(self._pending.values()):
            self._finish(request, exc=KVError("the client was closed"))

    # -- operations --------------------------------------------------------------------------

    async def get(self, key: Bytes) -> Optional[bytes]:
        """The value, or None when the key is absent (a linearizable read)."""
        status, body = await self._call(Op.GET, _b(key))
        return body if status == Status.OK else None

    async def put(self, key: Bytes, value: Bytes) -> None:
        await self._call(Op.PUT, _b(key), _b(value))

    async def delete(self, key: Bytes) -> None:
        await self._call(Op.DELETE, _b(key))

    async def append(self, key: Bytes, value: Bytes) -> None:
        await self._call(Op.APPEND, _b(key), _b(value))

    async def cas(self, key: Bytes, expected: Optional[Bytes], value: Bytes) -> bool:
        """Set `key` to `value` if it holds `expected` (None: if it is absent); True if it did."""
        exp = None if expected is None else _b(expected)
        status, _ = await self._call(Op.CAS, _b(key), _b(value), exp)
        return status == Status.OK

    async def status(self) -> Dict[str, Any]:
        """The status of the node this client is connected to (any node, not only the leader)."""
        _, body = await self._call(Op.STATUS)
        return json.loads(body)

    async def add_server(self, node_id: int) -> None:
        await self._call(Op.ADD_SERVER, str(node_id).encode())

    async def remove_server(self, node_id: int) -> None:
        await self._call(Op.REMOVE_SERVER, str(node_id).encode())

    async def add_learner(self, node_id: int) -> None:
        await self._call(Op.ADD_LEARNER, str(node_id).encode())

    async def promote_learner(self, node_id: int) -> None:
        await self._call(Op.PROMOTE_LEARNER, str(node_id).encode())

    async def transfer_leadership(self, node_id: int) -> None:
        """Ask the leader to hand leadership to `node_id`; returns once it has."""
        await self._call(Op.TRANSFER_LEADER, str(node_id).encode())

    # -- machinery ---------------------------------------------------------------------------

    async def _call(self, op: int, key: bytes = b"", value: bytes = b"", expected: Optional[bytes] = None):
        if self._closed:
            raise KVError("the client is closed")
        loop = asyncio.get_running_loop()
        seq = 0
        if op in WRITE_OPS:
            seq = self._next_seq
            self._next_seq += 1
            self._open_seqs.add(seq)
        rid = self._next_rid
        self._next_rid = (rid + 1) & 0xFFFFFFFF or 1
        request = _Request(op, rid, key, value, expected, seq, loop.create_future())
        request.timer = loop.call_later(self.timeout, self._expire, request)
        self._pending[rid] = request
        if self._conn is not None:
            self._write(request)
        else:
            self._connect()
        status, body = await request.future
        if status == Status.ERROR:
            raise KVError(bytes(body).decode(errors="replace"))
        return status, body

    def _ack(self) -> int:
        """The lowest seq still awaited: the cluster may forget results below it."""
        low, open_seqs, next_seq = self._low_seq, self._open_seqs, self._next_seq
        while low < next_seq and low not in open_seqs:
            low += 1
        self._low_seq = low
        return low

    def _write(self, request: _Request) -> None:
        self._out.append(
            encode_request(request.op, request.rid, request.key, request.value, request.expected,
                           self.client_id if request.seq else 0, request.seq,
                           self._ack() if request.seq else 0)
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        self._out = []
        if out and self._conn is not None:
            self._conn.transport.writelines(out)

    def _finish(self, request: _Request, result: Any = None, exc: Optional[BaseException] = None) -> None:
        self._pending.pop(request.rid, None)
        self._open_seqs.discard(request.seq)
        if request.timer is not None:
            request.timer.cancel()
        if not request.future.done():
            if exc is not None:
                request.future.set_exception(exc)
            else:
                request.future.set_result(result)

    def _expire(self, request: _Request) -> None:
        request.timer = None
        why = f"; last connection error: {self._last_error}" if self._last_error else ""
        self._finish(request, exc=KVTimeoutError(
            f"no answer within {self.timeout:g} s (a write may or may not have been applied){why}"))

    def _connect(self, delay: float = 0.0) -> None:
        if self._connecting is None and not self._closed:
            self._connecting = asyncio.get_running_loop().create_task(self._dial(delay))

    async def _dial(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            if delay:
                await asyncio.sleep(delay)
            while self._pending and not self._closed:
                address = self.addresses[self._target]
                try:
                    await asyncio.wait_for(
                        loop.create_connection(lambda: _ClientProtocol(self), address.host, address.port,
                                               ssl=self.ssl, server_hostname=address.host if self.ssl else None),
                        self.connect_timeout,
                    )
                    return
                except (OSError, asyncio.TimeoutError) as exc:
                    self._last_error = f"{address}: {type(exc).__name__}: {exc}"
                    logger.debug("cannot connect to %s: %s", address, exc)
                    self._target = (self._target + 1) % len(self.addresses)
                    if self._target == 0:
                        await asyncio.sleep(0.05)
        finally:
            self._connecting = None

    # called by _ClientProtocol
    def _connected(self, conn: "_ClientProtocol") -> None:
        self._conn = conn
        self._connecting = None
        self._last_error = ""
        if self.token is not None:  # request id 0: never one of ours, so its reply is told apart
            self._out.append(encode_request(Op.AUTH, 0, self.token))
        for request in sorted(self._pending.values(), key=lambda r: r.rid):
            self._write(request)

    def _disconnected(self, conn: "_ClientProtocol") -> None:
        if self._conn is conn:
            self._conn = None
            self._out = []
            if self._pending:
                self._last_error = f"{self.addresses[self._target]}: the node closed the connection"
                self._target = (self._target + 1) % len(self.addresses)
                self._connect(0.01)

    def _redirect(self, conn: "_ClientProtocol", leader: Optional[int], address: str) -> None:
        """NOT_LEADER: move to the named leader, or to the next node after a pause."""
        if self._conn is not conn:
            return  # already moving
        self._conn = None
        self._out = []
        conn.transport.close()
        delay = 0.0
        target: Optional[Address] = None
        if address:
            try:
                target = parse_address(address)
            except ValueError:
                target = None
        if target is not None:
            if target not in self.addresses:
                self.addresses.append(target)
            self._target = self.addresses.index(target)
        else:  # an election is probably under way
            self._target = (self._target + 1) % len(self.addresses)
            delay = 0.02
        self._connect(delay)

    def _response(self, conn: "_ClientProtocol", rid: int, status: int, body: bytes) -> None:
        request = self._pending.get(rid)
        if request is None:
            if rid == 0 and status == Status.ERROR:  # AUTH refused: no retry will do better
                error = KVError(bytes(body).decode(errors="replace"))
                for pending in list(self._pending.values()):
                    self._finish(pending, exc=error)
            return  # timed out already, or an answer to an earlier attempt
        if status == Status.NOT_LEADER:
            leader, address = decode_not_leader(body)
            self._redirect(conn, leader, address)
            return
        self._finish(request, (status, body))


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: KVClient) -> None:
        self.client = client
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client._connected(self)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.client._disconnected(self)

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        unpack = RESPONSE.unpack_from
        head = RESPONSE.size
        end = len(data)
        pos = 0
        client = self.client
        while end - pos >= head:
            length, rid, status = unpack(data, pos)
            if not 5 <= length <= _MAX_RESPONSE:
                logger.warning("closing the connection: response length %d is invalid", length)
                self.transport.abort()  # type: ignore[union-attr]
                return
            frame_end = pos + 4 + length
            if frame_end > end:
                break
            client._response(self, rid, status, data[pos + head : frame_end])
            pos = frame_end
        self.buffer = data[pos:] if pos < end else b""
