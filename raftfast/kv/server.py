"""KVServer: one member of a replicated key-value cluster, all parts wired together.

    server = KVServer(ServerOptions(node_id=1, peers={1: a1, 2: a2, 3: a3}, data_dir="d1"))
    await server.start()      # recovers from the WAL, listens for peers and clients
    ...
    await server.stop()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .. import framing
from ..config import RaftConfig
from ..runtime.address import CLIENT_PORT_OFFSET, Address
from ..runtime.peers import MAX_ENTRIES
from ..runtime.server import RaftServer
from ..runtime.storage import open_log
from ..security.auth import ClientAuth
from ..security.tls import TLSConfig
from ..types import NodeId
from .gate import ClientPortSecurity
from .limits import MAX_PENDING, REQUEST_TIMEOUT
from .service import KVService
from .store import KVStore

__all__ = ["KVServer", "ServerOptions"]


@dataclass
class ServerOptions:
    """Everything `raftfast serve` takes. `peers` holds every initial member's peer address,
    this node's own included (that is where it listens); for a joining node (`join=True`) it
    names the members to dial."""

    node_id: NodeId
    peers: Dict[NodeId, Address] = field(default_factory=dict)
    data_dir: Optional[str] = None  # None: an in-memory log (tests, demos)
    cluster_id: str = "raftfast"
    host: str = "127.0.0.1"  # where to listen when `peers` does not name this node
    peer_port: int = 0  # used when `peers` does not name this node (0 = any free port)
    client_port: Optional[int] = None  # None: peer port + CLIENT_PORT_OFFSET
    tick_interval: float = 0.01  # seconds per logical tick
    election_timeout: Tuple[int, int] = (15, 30)  # ticks
    heartbeat_interval: int = 3  # ticks
    snapshot_threshold: int = 20_000  # entries applied past the last snapshot
    snapshot_bytes: int = 64 << 20  # or bytes of commands applied past it (0: entries only)
    join: bool = False
    max_request: int = 1 << 20
    max_frame: int = framing.MAX_FRAME
    queue_bytes: int = 16 << 20
    pipelined_sync: bool = False  # fsyncs in a worker thread (docs/runtime.md); needs data_dir
    # Security: mutual TLS between nodes and TLS for clients, who then need an identity (a
    # certificate, or a token from one of the token files). `{id}` in the paths is the node id.
    tls: Optional[TLSConfig] = None
    token_file: Optional[str] = None  # a bearer token with the client role (needs tls)
    admin_token_file: Optional[str] = None  # a bearer token with the admin role (needs tls)
    max_entries: int = MAX_ENTRIES  # per AppendEntries received
    max_pending: int = MAX_PENDING  # client requests received and not yet answered
    request_timeout: float = REQUEST_TIMEOUT  # seconds a client request may take to arrive
    raft: Dict[str, Any] = field(default_factory=dict)  # more RaftConfig knobs

    def raft_config(self) -> RaftConfig:
        return RaftConfig(
            self.node_id,
            peers=tuple(self.peers),
            election_timeout=self.election_timeout,
            heartbeat_interval=self.heartbeat_interval,
            snapshot_threshold=self.snapshot_threshold,
            join=self.join,
            **self.raft,
        )


class KVServer:
    def __init__(self, options: ServerOptions, *, store: Optional[KVStore] = None) -> None:
        self.options = options
        config = options.raft_config()  # validates before anything is opened
        if config.max_batch > options.max_entries:
            raise ValueError(f"max_entries {options.max_entries} is below max_batch {config.max_batch}: "
                             "peers would refuse this node's AppendEntries")
        tls = options.tls.for_node(options.node_id) if options.tls is not None else None
        security = None
        if tls is not None:
            tls.check()
            auth = ClientAuth.from_files(options.token_file, options.admin_token_file)
            security = ClientPortSecurity(tls.client_port_context, auth)
        elif options.token_file or options.admin_token_file:
            raise ValueError("bearer tokens need TLS (a token sent in the clear is a token given away)")
        self.service = KVService(store, max_request=options.max_request, security=security,
                                 max_pending=options.max_pending, request_timeout=options.request_timeout)
        self.raft = RaftServer(
            config, self.service, open_log(options.data_dir),
            cluster_id=options.cluster_id,
            peers={k: a for k, a in options.peers.items() if a.port},  # port 0: not known yet
            tick_interval=options.tick_interval, max_frame=options.max_frame,
            queue_bytes=options.queue_bytes,
            pipelined_sync=options.pipelined_sync and options.data_dir is not None,
            tls=tls, max_entries=options.max_entries, snapshot_bytes=options.snapshot_bytes,
        )
        self.service.attach(self.raft)

    @property
    def id(self) -> NodeId:
        return self.options.node_id

    @property
    def peer_address(self) -> Optional[Address]:
        return self.raft.peer_address

    @property
    def client_address(self) -> Optional[Address]:
        return self.service.address

    async def start(self) -> None:
        options = self.options
        own = options.peers.get(options.node_id)
        host, peer_port = (own.host, own.port) if own is not None else (options.host, options.peer_port)
        client_port = options.client_port
        if client_port is None:
            client_port = peer_port + CLIENT_PORT_OFFSET if peer_port else 0
        client = await self.service.start(host, client_port)
        self.raft.transport.client_address = str(client)
        await self.raft.start(host, peer_port)

    async def stop(self) -> None:
        await self.service.stop()
        await self.raft.stop()
        close = getattr(self.raft.node.log, "close", None)
        if close is not None:
            close()

    async def wait_closed(self) -> None:
        await self.raft.wait_closed()
