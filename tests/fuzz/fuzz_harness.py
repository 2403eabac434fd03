"""Feeding hostile bytes to the protocols that read the network, without sockets.

Each `feed_*` runs the real protocol object (the peer port's `_Inbound`, the client port's
`_Connection` and `AuthGate`, the client library's `_ClientProtocol`) over a fake transport,
delivering `chunks` as successive reads, and checks what must hold for any input:

- nothing raises: bad input is a closed connection, never an exception in the event loop;
- once a protocol closes its transport it is fed nothing more (as a real transport would);
- every message the peer port delivers comes from the node its hello named;
- every reply the client port writes is a well-formed response frame;
- the gate hands a connection over only for the right token.

Shared by the hypothesis tests (test_fuzz_decoders.py) and the atheris target.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from raftfast.kv.client import KVClient, _ClientProtocol
from raftfast.kv.gate import AuthGate, ClientPortSecurity
from raftfast.kv.protocol import RESPONSE
from raftfast.kv.service import KVService, _Connection
from raftfast.runtime.peers import PeerTransport, _Inbound
from raftfast.security.auth import ClientAuth

__all__ = ["TOKEN", "feed_client", "feed_gate", "feed_peer", "feed_replies", "run"]

TOKEN = b"fuzz-token-0123456789"


class FakeTransport(asyncio.Transport):
    def __init__(self, peercert: Optional[dict] = None) -> None:
        super().__init__()
        self.written: List[bytes] = []
        self.closed = False
        self.reading = True
        self.protocol: Optional[asyncio.BaseProtocol] = None
        self.peercert = peercert

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 4242), "peercert": self.peercert}.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written.append(bytes(data))

    def writelines(self, data) -> None:
        for chunk in data:
            self.write(chunk)

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[return-value]


def _deliver(protocol: asyncio.Protocol, transport: FakeTransport, chunks: List[bytes]) -> None:
    transport.protocol = protocol
    protocol.connection_made(transport)
    for chunk in chunks:
        if transport.closed:
            break
        transport.protocol.data_received(chunk)  # type: ignore[union-attr]  # the gate may hand over
    transport.protocol.connection_lost(None)  # type: ignore[union-attr]


async def _peer(chunks: List[bytes], max_entries: int) -> None:
    received: list = []
    owner = PeerTransport(1, "raftfast", received.extend, max_entries=max_entries, max_connections_per_peer=2)
    conn = _Inbound(owner)
    _deliver(conn, FakeTransport(), chunks)
    assert all(m.sender == conn.peer for m in received), "a message from a node other than the hello's"
    await owner.close()


class _Node:
    """What KVService asks of its RaftServer while it reads requests."""

    def __init__(self, leader: bool) -> None:
        self.leader = None
        self._leader = leader
        self.id = 1
        self.members: List[int] = []  # a leadership transfer is refused at once, not awaited

    def is_leader(self) -> bool:
        return self._leader


class _Raft:
    def __init__(self, leader: bool) -> None:
        self.node = _Node(leader)
        self.id = 1
        self.tick_interval = 0.01

    def wake(self) -> None:
        pass

    def submit(self, event: object) -> None:
        pass

    def status(self) -> dict:
        return {"id": 1}

    def client_address_of(self, node_id: Any) -> str:
        return ""

    async def change_membership(self, event: object) -> None:
        pass


def _service(leader: bool, max_request: int) -> KVService:
    service = KVService(max_request=max_request)
    service.attach(_Raft(leader))  # type: ignore[arg-type]
    service._is_leader = leader
    return service


def _check_replies(written: List[bytes]) -> None:
    data = b"".join(written)
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= RESPONSE.size, "a truncated reply"
        length, _, status = RESPONSE.unpack_from(data, pos)
        assert length >= 5 and status <= 4, f"a malformed reply head {length}, {status}"
        pos += 4 + length
    assert pos == len(data), "a reply longer than the bytes written"


async def _client_port(chunks: List[bytes], leader: bool, max_request: int) -> None:
    service = _service(leader, max_request)
    transport = FakeTransport()
    conn = _Connection(service)
    _deliver(conn, transport, chunks)
    service.flush()
    _check_replies(transport.written)
    await asyncio.sleep(0)  # admin requests start tasks: let them run against the stub


async def _gate(chunks: List[bytes], max_request: int) -> None:
    service = _service(True, max_request)
    security = ClientPortSecurity(None, ClientAuth(TOKEN))  # type: ignore[arg-type]  # TLS is done by then
    transport = FakeTransport()
    gate = AuthGate(security, lambda: _Connection(service), label="fuzz", max_request=max_request)
    _deliver(gate, transport, chunks)
    if isinstance(transport.protocol, _Connection):
        assert TOKEN in b"".join(chunks), "handed over without the token"
        assert transport.protocol.identity is not None
    service.flush()
    _check_replies(transport.written)
    await asyncio.sleep(0)


async def _replies(chunks: List[bytes]) -> None:
    client = KVClient(["127.0.0.1:1"])
    protocol = _ClientProtocol(client)
    transport = FakeTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        if transport.closed:
            break
        protocol.data_received(chunk)
    await client.close()


_loop: Optional[asyncio.AbstractEventLoop] = None


def run(coro) -> None:
    """Run on one loop kept for the whole process: a new loop per example costs more than it."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    _loop.run_until_complete(coro)


def feed_peer(chunks: List[bytes], max_entries: int = 16) -> None:
    run(_peer(chunks, max_entries))


def feed_client(chunks: List[bytes], leader: bool = True, max_request: int = 1 << 12) -> None:
    run(_client_port(chunks, leader, max_request))


def feed_gate(chunks: List[bytes], max_request: int = 1 << 12) -> None:
    run(_gate(chunks, max_request))


def feed_replies(chunks: List[bytes]) -> None:
    run(_replies(chunks))
