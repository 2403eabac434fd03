"""LocalKVCluster: several KVServers in this process, on one event loop, on free loopback ports.

For tests, demos and embedding; `raftfast.runtime.cluster.LocalCluster` runs separate
processes instead.

    async with LocalKVCluster(3) as cluster:
        async with cluster.client() as kv:
            await kv.put(b"k", b"v")
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from typing import Dict, List, Optional

from ..runtime.address import Address
from ..types import NodeId
from .client import KVClient
from .server import KVServer, ServerOptions

__all__ = ["LocalKVCluster"]


class LocalKVCluster:
    """`size` nodes; `data_dir` gives each a WAL in `data_dir/node-N` (else in-memory logs).
    `options` is the template for every node's ServerOptions (fast ticks by default)."""

    def __init__(self, size: int = 3, *, data_dir: Optional[str] = None,
                 options: Optional[ServerOptions] = None) -> None:
        self.data_dir = data_dir
        self.template = options or ServerOptions(node_id=1, tick_interval=0.005, election_timeout=(10, 20))
        self.ids: List[NodeId] = list(range(1, size + 1))
        self.servers: Dict[NodeId, KVServer] = {}
        self.peer_addresses: Dict[NodeId, Address] = {}
        self.client_addresses: Dict[NodeId, Address] = {}

    async def __aenter__(self) -> "LocalKVCluster":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def node_dir(self, node_id: NodeId) -> Optional[str]:
        return os.path.join(self.data_dir, f"node-{node_id}") if self.data_dir else None

    async def start(self) -> None:
        for node_id in self.ids:
            await self.start_node(node_id)

    async def start_node(self, node_id: NodeId, *, join: bool = False, members: Optional[List[NodeId]] = None) -> KVServer:
        """Start (or restart, on its old ports and data) node `node_id`. A new node started
        with `join=True` waits to be added by the leader."""
        members = members if members is not None else self.ids
        peers = {i: self.peer_addresses.get(i, Address("127.0.0.1", 0)) for i in set(members) | {node_id}}
        options = dataclasses.replace(
            self.template, node_id=node_id, peers=peers, data_dir=self.node_dir(node_id), join=join,
            client_port=self.client_addresses[node_id].port if node_id in self.client_addresses else 0,
        )
        server = KVServer(options)
        await server.start()
        self.servers[node_id] = server
        self.peer_addresses[node_id] = server.peer_address  # type: ignore[assignment]
        self.client_addresses[node_id] = server.client_address  # type: ignore[assignment]
        for other in self.servers.values():  # everyone learns everyone's (new) address
            for peer, address in self.peer_addresses.items():
                if peer != other.id:
                    other.raft.set_peer_address(peer, address)
        return server

    async def stop_node(self, node_id: NodeId) -> None:
        await self.servers.pop(node_id).stop()

    def wipe_node(self, node_id: NodeId) -> None:
        """Delete a stopped node's data directory."""
        path = self.node_dir(node_id)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    async def stop(self) -> None:
        for node_id in list(self.servers):
            await self.stop_node(node_id)

    def client(self, **kwargs) -> KVClient:
        return KVClient([self.client_addresses[i] for i in sorted(self.client_addresses)], **kwargs)

    def leader(self) -> Optional[KVServer]:
        leaders = [s for s in self.servers.values() if s.raft.node.is_leader()]
        return max(leaders, key=lambda s: s.raft.node.term) if leaders else None

    async def wait_leader(self, timeout: float = 5.0) -> KVServer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no leader within {timeout} s")

    async def wait_applied(self, index: int, nodes: Optional[List[NodeId]] = None, timeout: float = 5.0) -> None:
        """Until every running node (or `nodes`) has applied through `index`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            servers = [self.servers[i] for i in (nodes or list(self.servers))]
            if all(s.raft.applied_index >= index for s in servers):
                return
            if loop.time() > deadline:
                applied = {s.id: s.raft.applied_index for s in servers}
                raise TimeoutError(f"nodes did not apply through {index} within {timeout} s: {applied}")
            await asyncio.sleep(0.01)
