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
- With TLS (`tls=TLSConfig`) the port is mutual TLS: a connection is handed over only after a
  completed handshake with a certificate from the cluster CA (`SecureListener` logs every
  refusal), and a peer's certificate must name the node it claims in its hello (`node-N`);
  a dialer checks the same of the node it dialed.
- Limits, each closing the connection with a logged reason: the hello must arrive within
  `hello_timeout`; an AppendEntries may carry at most `max_entries` entries (checked before it
  is decoded); a peer may hold at most `max_connections_per_peer` inbound connections (a new
  one closes the oldest, so a peer that reconnects after a silent loss is never locked out).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import struct
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Set

from .. import framing
from ..codec._format import MESSAGE_CODES
from ..errors import EncodingError
from ..messages import AppendEntries, Message
from ..security.tls import TLSConfig, certificate_names, describe_tls_error, names_node, node_name
from ..types import NodeId
from .address import Address, parse_address
from .handshake import HandshakeError, Hello
from .ratelog import RateLimitedLog

if TYPE_CHECKING:
    from ..security.listener import SecureListener

__all__ = ["PeerTransport"]

logger = logging.getLogger("raftfast.runtime.peers")

MessageSink = Callable[[List[Message]], None]

MAX_ENTRIES = 1 << 16
"""Default bound on entries per AppendEntries received (far above RaftConfig.max_batch)."""
MAX_CONNECTIONS_PER_PEER = 4
HELLO_TIMEOUT = 10.0

_APPEND_ENTRIES = MESSAGE_CODES[AppendEntries]
_ENTRY_COUNT = struct.Struct("<I")
_ENTRY_COUNT_AT = 42  # docs/wire-format.md: the u32 count after the AppendEntries head
_ENTRY_COUNT_END = _ENTRY_COUNT_AT + _ENTRY_COUNT.size


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
        tls: Optional[TLSConfig] = None,
        max_entries: int = MAX_ENTRIES,
        max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.on_messages = on_messages
        self.max_frame = max_frame
        self.queue_bytes = queue_bytes
        self.backoff = backoff
        self.tls = tls
        self.max_entries = max_entries
        self.max_connections_per_peer = max_connections_per_peer
        self.hello_timeout = hello_timeout
        self.client_address = client_address
        self.peer_address = ""
        self.addresses: Dict[NodeId, Address] = dict(addresses or {})
        self.client_addresses: Dict[NodeId, str] = {}
        self.ratelog = RateLimitedLog(logger)
        self._links: Dict[NodeId, _Link] = {}
        self._members: Set[NodeId] = set()
        self._server: Optional[asyncio.AbstractServer] = None
        self._listener: Optional["SecureListener"] = None
        self._inbound: Set[asyncio.Transport] = set()
        self._by_peer: Dict[NodeId, List[_Inbound]] = {}  # identified inbound connections
        self._closed = False
        # Fault injection (raftfast.runtime.faults): frames to `drop_to` are never sent, frames
        # from `drop_from` are dropped on arrival; the two differ for a one-way partition.
        self.drop_to: Set[NodeId] = set()
        self.drop_from: Set[NodeId] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> Address:
        """Accept peers on `host:port` (0 picks a free port); returns the bound address."""
        if self.tls is not None:
            from ..security.listener import SecureListener  # it imports the runtime package

            self._listener = SecureListener(self.tls.peer_server_context, lambda: _Inbound(self),
                                            label=f"node {self.node_id} peer port",
                                            handshake_timeout=self.hello_timeout)
            address = await self._listener.start(host, port)
        else:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(lambda: _Inbound(self), host, port)
            address = Address(host, self._server.sockets[0].getsockname()[1])
        self.peer_address = str(address)
        return address

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        if self._listener is not None:
            self._listener.close()
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

    def _admit(self, conn: "_Inbound") -> None:
        """Count an identified inbound connection; past the limit, close that peer's oldest."""
        conns = self._by_peer.setdefault(conn.peer, [])  # type: ignore[arg-type]
        conns.append(conn)
        if len(conns) > self.max_connections_per_peer:
            conns.pop(0)._reject(
                f"more than {self.max_connections_per_peer} connections from this peer: closing the oldest"
            )

    def _dial_options(self, peer: NodeId) -> dict:
        if self.tls is None:
            return {}
        return {"ssl": self.tls.peer_client_context, "server_hostname": node_name(peer),
                "ssl_handshake_timeout": self.hello_timeout}

    # -- sending -----------------------------------------------------------------------------

    def send(self, peer: NodeId, frames: List[bytes]) -> None:
        """Queue `frames` for `peer` (one write); dropped when the peer's queue is full."""
        if peer in self.drop_to:
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
                    await loop.create_connection(lambda: _Outbound(self), address.host, address.port,
                                                 **owner._dial_options(self.peer))
                except OSError as exc:
                    self.lost = None
                    if isinstance(exc, ssl.SSLError):
                        owner.ratelog.log(
                            logging.WARNING, ("dial", self.peer), "node %d: TLS with node %d at %s failed: %s",
                            owner.node_id, self.peer, address, describe_tls_error(exc),
                        )
                    else:
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
        if owner.tls is not None:
            cert = transport.get_extra_info("peercert")
            if not names_node(cert, self.peer):  # whoever answers must be the node we dialed
                owner.ratelog.log(
                    logging.WARNING, ("dial", self.peer),
                    "node %d: the node at %s is not node %d: its certificate names %s; disconnecting",
                    owner.node_id, owner.addresses.get(self.peer), self.peer,
                    ", ".join(certificate_names(cert)) or "nothing",
                )
                transport.abort()
                return
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

    __slots__ = ("owner", "transport", "reader", "peer", "peername", "deadline")

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.transport: Optional[asyncio.Transport] = None
        self.reader = framing.FrameReader(owner.max_frame)
        self.peer: Optional[NodeId] = None
        self.peername = "?"
        self.deadline: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peername = str(transport.get_extra_info("peername"))
        self.owner._inbound.add(transport)  # type: ignore[arg-type]
        # a connection that never says hello (or trickles it) must not hold a socket forever
        self.deadline = asyncio.get_running_loop().call_later(self.owner.hello_timeout, self._no_hello)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        owner = self.owner
        owner._inbound.discard(self.transport)  # type: ignore[arg-type]
        if self.deadline is not None:
            self.deadline.cancel()
        conns = owner._by_peer.get(self.peer) if self.peer is not None else None
        if conns is not None and self in conns:
            conns.remove(self)
            if not conns:  # hellos may name any id: keep no entry for a peer with no connection
                del owner._by_peer[self.peer]  # type: ignore[arg-type]

    def _no_hello(self) -> None:
        self.deadline = None
        self._reject(f"no complete hello within {self.owner.hello_timeout:g} s")

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
            if owner.tls is not None:
                cert = self.transport.get_extra_info("peercert")  # type: ignore[union-attr]
                if not names_node(cert, hello.sender):
                    self._reject(f"it claims to be node {hello.sender}, but its certificate names "
                                 f"{', '.join(certificate_names(cert)) or 'no node'}")
                    return
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None
            self.peer = hello.sender
            owner._learn(hello)
            owner._admit(self)
            start = 1
        decode = framing.decode
        peer = self.peer
        max_entries = owner.max_entries
        messages: List[Message] = []
        error = None
        for payload in frames[start:] if start else frames:
            # judged before decoding: a huge batch would cost its decode before being refused
            if payload[1] == _APPEND_ENTRIES and len(payload) >= _ENTRY_COUNT_END:
                (count,) = _ENTRY_COUNT.unpack_from(payload, _ENTRY_COUNT_AT)
                if count > max_entries:
                    error = f"an AppendEntries with {count} entries exceeds the limit of {max_entries}"
                    break
            try:
                message = decode(payload)
            except EncodingError as exc:
                error = f"undecodable frame: {exc}"
                break
            if message.sender != peer:
                error = f"message from node {message.sender} on node {peer}'s connection"
                break
            messages.append(message)
        if messages and peer not in owner.drop_from:
            owner.on_messages(messages)
        if error is not None:
            self._reject(error)
