"""The peer transport: TCP links between the members of a cluster.

Every node dials each peer for its own outgoing messages and accepts inbound connections for
the messages peers send it, so each direction of each pair is one connection with one writer
and one reader: simple, symmetric, and with no tie-breaking when two nodes dial at once.

- A dialed connection opens with a `Hello` (cluster id, sender, target, the sender's
  addresses); the acceptor closes it, with a logged reason, on any mismatch.
- Frames are `raftfast.framing` frames. A frame that does not decode, or a message claiming to
  come from someone other than the hello's sender, closes that connection with a logged
  reason; nothing else changes, and the dialer reconnects.
- Outgoing frames for a peer are written with one `writelines` per turn. The queue per peer is
  bounded (the transport's write buffer while connected, a small list while connecting); past
  the bound frames are dropped, since Raft retransmits whatever matters.
- A link reconnects with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Callable, Dict, Iterable, List, Optional, Set

from .. import framing
from ..errors import EncodingError
from ..messages import Message
from ..types import NodeId
from .address import Address, parse_address
from .handshake import HandshakeError, Hello
from .ratelog import RateLimitedLog

__all__ = ["PeerTransport"]

logger = logging.getLogger("raftfast.runtime.peers")

MessageSink = Callable[[List[Message]], None]


class PeerTransport:
    """Links to every peer this node sends to, and a listener for the peers that send to it.

    `on_messages(list)` receives the messages that arrived in one read, in order.
    """

    def __init__(
        self,
        node_id: NodeId,
        cluster_id: str,
        on_messages: MessageSink,
        *,
        addresses: Optional[Dict[NodeId, Address]] = None,
        client_address: str = "",
        max_frame: int = framing.MAX_FRAME,
        queue_bytes: int = 16 << 20,
        backoff: tuple = (0.02, 1.0),
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.on_messages = on_messages
        self.max_frame = max_frame
        self.queue_bytes = queue_bytes
        self.backoff = backoff
        self.client_address = client_address
        self.peer_address = ""
        self.addresses: Dict[NodeId, Address] = dict(addresses or {})
        self.client_addresses: Dict[NodeId, str] = {}
        self.ratelog = RateLimitedLog(logger)
        self._links: Dict[NodeId, _Link] = {}
        self._members: Set[NodeId] = set()
        self._server: Optional[asyncio.AbstractServer] = None
        self._inbound: Set[asyncio.Transport] = set()
        self._closed = False
        # Fault injection (raftfast.runtime.faults): frames to and from these peers are dropped.
        self.blocked: Set[NodeId] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> Address:
        """Accept peers on `host:port` (0 picks a free port); returns the bound address."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Inbound(self), host, port)
        bound = self._server.sockets[0].getsockname()
        address = Address(host, bound[1])
        self.peer_address = str(address)
        return address

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for link in list(self._links.values()):
            link.close()
        self._links.clear()
        for transport in list(self._inbound):
            transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    # -- membership and addresses ----------------------------------------------------------

    def set_members(self, members: Iterable[NodeId]) -> None:
        """Keep links to exactly these nodes (this node's own id is ignored)."""
        members = set(members) - {self.node_id}
        self._members = members
        for peer in list(self._links):
            if peer not in members:
                self._links.pop(peer).close()
        for peer in members:
            self._link(peer)

    def set_address(self, peer: NodeId, address: Address) -> None:
        """Learn or change where `peer` listens; an existing link redials there."""
        if self.addresses.get(peer) == address:
            return
        self.addresses[peer] = address
        link = self._links.get(peer)
        if link is not None:
            link.redial()

    def _learn(self, hello: Hello) -> None:
        if hello.client_address:
            self.client_addresses[hello.sender] = hello.client_address
        if hello.peer_address:
            try:
                address = parse_address(hello.peer_address)
            except ValueError:
                return
            if hello.sender not in self.addresses:
                self.set_address(hello.sender, address)

    # -- sending -----------------------------------------------------------------------------

    def send(self, peer: NodeId, frames: List[bytes]) -> None:
        """Queue `frames` for `peer` (one write); dropped when the peer's queue is full."""
        if peer in self.blocked:
            return
        link = self._links.get(peer)
        if link is None:
            if self._closed:
                return
            link = self._link(peer)
        link.send(frames)

    def _link(self, peer: NodeId) -> "_Link":
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _Link(self, peer)
        return link

    def connected(self, peer: NodeId) -> bool:
        link = self._links.get(peer)
        return link is not None and link.transport is not None


class _Link:
    """The outgoing connection to one peer: dial, hello, write, and redial after a loss."""

    __slots__ = ("owner", "peer", "transport", "pending", "pending_bytes", "task", "lost", "closed", "wakeup")

    def __init__(self, owner: PeerTransport, peer: NodeId) -> None:
        self.owner = owner
        self.peer = peer
        self.transport: Optional[asyncio.Transport] = None
        self.pending: List[bytes] = []
        self.pending_bytes = 0
        self.lost: Optional[asyncio.Future] = None
        self.closed = False
        self.wakeup = asyncio.Event()  # set when the peer's address changes
        self.task = asyncio.get_running_loop().create_task(self._run())

    def send(self, frames: List[bytes]) -> None:
        transport = self.transport
        owner = self.owner
        if transport is not None:
            if transport.get_write_buffer_size() < owner.queue_bytes:
                transport.writelines(frames)
                return
            reason = "its send queue is full"
        else:
            size = sum(map(len, frames))
            if self.pending_bytes + size <= owner.queue_bytes:
                self.pending.extend(frames)
                self.pending_bytes += size
                return
            reason = "it is not connected and the queue is full"
        owner.ratelog.log(
            logging.WARNING, ("drop", self.peer), "node %d: dropping messages to node %d: %s",
            owner.node_id, self.peer, reason,
        )

    def redial(self) -> None:
        self.wakeup.set()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    async def _run(self) -> None:
        owner = self.owner
        loop = asyncio.get_running_loop()
        lo, hi = owner.backoff
        delay = lo
        while not self.closed:
            address = owner.addresses.get(self.peer)
            if address is not None:
                self.lost = loop.create_future()
                try:
                    await loop.create_connection(lambda: _Outbound(self), address.host, address.port)
                except OSError as exc:
                    self.lost = None
                    owner.ratelog.log(
                        logging.INFO, ("dial", self.peer), "node %d: cannot reach node %d at %s: %s",
                        owner.node_id, self.peer, address, exc,
                    )
                else:
                    delay = lo
                    await self.lost
            # jitter keeps a restarted cluster from redialing in lockstep
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), delay * (0.5 + random.random()))
                delay = lo
            except asyncio.TimeoutError:
                delay = min(hi, delay * 2)

    # called by _Outbound
    def connected(self, transport: asyncio.Transport) -> None:
        owner = self.owner
        hello = Hello(owner.cluster_id, owner.node_id, self.peer, owner.peer_address, owner.client_address)
        transport.write(_frame(hello.encode()))
        if self.pending:
            transport.writelines(self.pending)
            self.pending = []
            self.pending_bytes = 0
        self.transport = transport
        logger.debug("node %d: connected to node %d", owner.node_id, self.peer)

    def disconnected(self, exc: Optional[BaseException]) -> None:
        self.transport = None
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        if not self.closed:
            self.owner.ratelog.log(
                logging.INFO, ("lost", self.peer), "node %d: connection to node %d lost (%s)",
                self.owner.node_id, self.peer, exc or "closed by peer",
            )


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "little") + payload


class _Outbound(asyncio.Protocol):
    __slots__ = ("link",)

    def __init__(self, link: _Link) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.link.connected(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.link.disconnected(exc)

    def data_received(self, data: bytes) -> None:
        pass  # the acceptor never writes on this connection


class _Inbound(asyncio.Protocol):
    """A connection a peer dialed: its hello, then its messages to this node."""

    __slots__ = ("owner", "transport", "reader", "peer", "peername")

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.transport: Optional[asyncio.Transport] = None
        self.reader = framing.FrameReader(owner.max_frame)
        self.peer: Optional[NodeId] = None
        self.peername = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peername = str(transport.get_extra_info("peername"))
        self.owner._inbound.add(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.owner._inbound.discard(self.transport)  # type: ignore[arg-type]

    def _reject(self, reason: str) -> None:
        who = f"node {self.peer}" if self.peer is not None else self.peername
        logger.warning("node %d: closing peer connection from %s: %s", self.owner.node_id, who, reason)
        self.transport.abort()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except EncodingError as exc:
            self._reject(str(exc))
            return
        if not frames:
            return
        owner = self.owner
        start = 0
        if self.peer is None:
            try:
                hello = Hello.decode(frames[0])
                hello.check(owner.cluster_id, owner.node_id)
            except HandshakeError as exc:
                self._reject(f"bad handshake: {exc}")
                return
            self.peer = hello.sender
            owner._learn(hello)
            start = 1
        decode = framing.decode
        peer = self.peer
        messages: List[Message] = []
        error = None
        for payload in frames[start:] if start else frames:
            try:
                message = decode(payload)
            except EncodingError as exc:
                error = f"undecodable frame: {exc}"
                break
            if message.sender != peer:
                error = f"message from node {message.sender} on node {peer}'s connection"
                break
            messages.append(message)
        if messages and peer not in owner.blocked:
            owner.on_messages(messages)
        if error is not None:
            self._reject(error)
