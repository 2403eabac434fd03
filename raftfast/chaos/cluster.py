"""ChaosCluster: `raftfast serve` processes that can be killed, paused, partitioned, removed,
wiped and re-added, with each node's status (and state digest) one request away.

Nodes 1..n are the initial members; a few spare ids above them are started only when a nemesis
adds a node. Partitions go through each node's fault file (`raftfast.runtime.faults`: the node
drops frames to and from the peers listed there), or, for `netns` episodes, through blackhole
routes between network namespaces (`raftfast.chaos.netns`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

import raftfast

from ..kv.protocol import RESPONSE, Op, encode_request
from ..runtime.address import Address
from ..runtime.cluster import free_ports
from ..runtime.faults import ENV as FAULTS_ENV
from .netns import Namespaces

__all__ = ["ChaosCluster", "ChaosNode", "fetch_status"]

NETNS_PEER_PORT, NETNS_CLIENT_PORT = 7000, 8000  # every node has its own namespace


@dataclass
class ChaosNode:
    id: int
    peer: Address
    client: Address
    data_dir: str
    join: bool = False  # started with --join: a restart must keep it (it is not an initial member)
    process: Optional[subprocess.Popen] = None
    paused: bool = False
    faults: Dict[str, Any] = field(default_factory=dict)  # the node's fault file, as last written

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> str:
        return self.data_dir + ".log"

    @property
    def fault_path(self) -> str:
        return self.data_dir + ".faults"


async def fetch_status(address: Address, timeout: float = 0.5) -> Optional[Dict[str, Any]]:
    """A node's STATUS with its state digest, or None if it does not answer in time."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), timeout)
        writer.write(encode_request(Op.STATUS, 1, b"digest"))
        head = await asyncio.wait_for(reader.readexactly(RESPONSE.size), timeout)
        length, _, status = RESPONSE.unpack(head)
        body = await asyncio.wait_for(reader.readexactly(length - 5), timeout)
        return json.loads(body) if status == 0 else None
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()


class ChaosCluster:
    def __init__(self, nodes: int, data_dir: str, *, spares: int = 2, netns: bool = False,
                 serve_args: Optional[List[str]] = None) -> None:
        self.data_dir = data_dir
        self.initial = list(range(1, nodes + 1))
        ids = list(range(1, nodes + spares + 1))
        self.namespaces: Optional[Namespaces] = Namespaces(ids) if netns else None
        self.serve_args = serve_args or []
        self.nodes: Dict[int, ChaosNode] = {}
        if self.namespaces is None:
            ports = free_ports(2 * len(ids))
            for k, i in enumerate(ids):
                self.nodes[i] = ChaosNode(i, Address("127.0.0.1", ports[2 * k]),
                                          Address("127.0.0.1", ports[2 * k + 1]),
                                          os.path.join(data_dir, f"node-{i}"))
        self.crashes: List[str] = []  # nodes that exited without being killed
        self._env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(raftfast.__file__)))
        self._env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, self._env.get("PYTHONPATH"))))

    # -- processes ---------------------------------------------------------------------------

    async def start(self, timeout: float = 20.0) -> None:
        if self.namespaces is not None:
            self.namespaces.setup()
            for i in self.namespaces.ids:
                host = self.namespaces.address(i)
                self.nodes[i] = ChaosNode(i, Address(host, NETNS_PEER_PORT), Address(host, NETNS_CLIENT_PORT),
                                          os.path.join(self.data_dir, f"node-{i}"))
        for i in self.initial:
            self.spawn(self.nodes[i])
        await asyncio.gather(*(self.wait_ready(self.nodes[i], timeout) for i in self.initial))

    def command(self, node: ChaosNode) -> List[str]:
        # --peers is the initial configuration of a fresh initial member, and only an address
        # book for a joining node, so a joining node lists everyone and a member only the members.
        listed = self.nodes if node.join else self.initial
        peers = ",".join(f"{i}={self.nodes[i].peer}" for i in sorted(set(listed) | {node.id}))
        command = [sys.executable, "-m", "raftfast.cli", "serve", "--id", str(node.id), "--peers", peers,
                   "--data-dir", node.data_dir, "--client-port", str(node.client.port), *self.serve_args]
        if node.join:
            command.append("--join")
        if self.namespaces is not None:  # namespace addresses are not loopback: say plaintext is meant
            command = self.namespaces.wrap(node.id, [*command, "--insecure"])
        return command

    def spawn(self, node: ChaosNode) -> None:
        assert not node.running, f"node {node.id} is already running"
        self.check_exit(node)
        os.makedirs(node.data_dir, exist_ok=True)
        self._write_faults(node)
        env = dict(self._env, **{FAULTS_ENV: node.fault_path})
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(self.command(node), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        node.paused = False

    def check_exit(self, node: ChaosNode) -> None:
        """Record it if `node` exited on its own: only SIGKILL, ours, may stop a node."""
        process = node.process
        if process is not None and process.poll() is not None and process.returncode != -signal.SIGKILL:
            self.crashes.append(f"node {node.id} exited on its own with code {process.returncode}; see {node.log_path}")
            node.process = None

    async def wait_ready(self, node: ChaosNode, timeout: float = 20.0) -> None:
        """Until `node` accepts clients; then it has read its fault file and handles SIGUSR1."""
        deadline = time.monotonic() + timeout
        while True:
            if not node.running:
                raise RuntimeError(f"node {node.id} exited with code {node.process.returncode if node.process else None}; "
                                   f"see {node.log_path}")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(node.client.host, node.client.port), 0.5)
                writer.close()
                break
            except (OSError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.id} did not listen on {node.client}; see {node.log_path}") from None
                await asyncio.sleep(0.05)
        self._signal(node)  # in case its fault file changed while it started

    async def restart(self, node: ChaosNode) -> None:
        if not node.running:
            self.spawn(node)
            await self.wait_ready(node)

    def kill(self, node: ChaosNode) -> None:
        """SIGKILL: the node loses everything it had not synced."""
        if node.running:
            node.process.kill()  # type: ignore[union-attr]
            node.process.wait()  # type: ignore[union-attr]
        node.paused = False

    def pause(self, node: ChaosNode) -> None:
        if node.running and not node.paused:
            node.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            node.paused = True

    def resume(self, node: ChaosNode) -> None:
        if node.running and node.paused:
            node.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        node.paused = False

    def wipe(self, node: ChaosNode) -> None:
        """Delete a stopped node's data: it can only come back as a new, joining server."""
        assert not node.running
        shutil.rmtree(node.data_dir, ignore_errors=True)
        node.join = True

    def stop(self) -> None:
        for node in self.nodes.values():
            self.check_exit(node)
            self.resume(node)
            self.kill(node)
        if self.namespaces is not None:
            self.namespaces.teardown()

    # -- network -----------------------------------------------------------------------------

    def partition(self, cut: Dict[int, Set[int]], *, netns: bool = False) -> None:
        """Node a's frames to every node in cut[a] vanish: a directed cut, so a symmetric
        partition names both directions and a one-way one names only one; links not named
        work. Replaces the previous partition of the same kind (fault files, or namespaces
        with netns=True, which can cut only both ways: TCP needs its acknowledgements)."""
        if netns:
            assert self.namespaces is not None, "this cluster does not run in namespaces"
            self.namespaces.block(cut)
            return
        for node in self.nodes.values():
            want = {"drop_to": sorted(cut.get(node.id, ())),
                    "drop_from": sorted(a for a, targets in cut.items() if node.id in targets)}
            if {k: node.faults.get(k, []) for k in want} != want:
                node.faults.update(want)
                self._write_faults(node)
                self._signal(node)

    def heal_network(self) -> None:
        self.partition({})
        if self.namespaces is not None:
            self.partition({}, netns=True)

    def _write_faults(self, node: ChaosNode) -> None:
        temporary = node.fault_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(node.faults, f)
        os.replace(temporary, node.fault_path)

    def _signal(self, node: ChaosNode) -> None:
        # a paused node gets it on SIGCONT; one that is starting reads the file itself
        if node.running:
            node.process.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]

    # -- observing ---------------------------------------------------------------------------

    @property
    def client_addresses(self) -> List[str]:
        return [str(self.nodes[i].client) for i in self.initial]

    async def statuses(self, timeout: float = 0.5) -> Dict[int, Dict[str, Any]]:
        """Status of every running, unpaused node that answers."""
        live = [n for n in self.nodes.values() if n.running and not n.paused]
        answers = await asyncio.gather(*(fetch_status(n.client, timeout) for n in live))
        return {n.id: s for n, s in zip(live, answers) if s is not None}

    async def leader(self) -> Optional[ChaosNode]:
        """The leader with the highest term among the nodes that answer, if any."""
        statuses = await self.statuses()
        leaders = [s for s in statuses.values() if s["role"] == "leader"]
        if not leaders:
            return None
        return self.nodes[max(leaders, key=lambda s: s["term"])["id"]]
