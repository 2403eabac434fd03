"""LocalCluster: a cluster of `raftfast serve` processes on this machine (for `raftfast
cluster`, `raftfast bench` and tests).

Each node listens for peers on `base_port + i` and for clients on that + 1000 (or on free
ports when `base_port` is 0), keeps its WAL in `data_dir/node-N`, and writes its log to
`data_dir/node-N.log` unless output is inherited. With `tls` (a template whose `{id}` is the
node id, e.g. `CertDir.tls_config()`), every node runs mutual TLS with its own certificate.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO, List, Optional, Sequence

import raftfast

from ..security.tls import TLSConfig
from .address import CLIENT_PORT_OFFSET, Address

__all__ = ["LocalCluster", "NodeProcess", "free_ports"]


@dataclass
class NodeProcess:
    id: int
    peer_address: Address
    client_address: Address
    data_dir: str
    process: Optional[subprocess.Popen] = None
    log_path: Optional[str] = None

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
    """`count` distinct ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LocalCluster:
    def __init__(
        self,
        nodes: int = 3,
        *,
        data_dir: Optional[str] = None,
        base_port: int = 7001,
        host: str = "127.0.0.1",
        cluster_id: str = "raftfast",
        serve_args: Sequence[str] = (),
        inherit_output: bool = False,
        tls: Optional[TLSConfig] = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, got {nodes}")
        self.host = host
        self.cluster_id = cluster_id
        self.serve_args = list(serve_args)
        self.tls = tls
        self.inherit_output = inherit_output
        self._own_dir = data_dir is None
        self.data_dir = data_dir if data_dir is not None else tempfile.mkdtemp(prefix="raftfast-cluster-")
        if base_port:
            ports = [base_port + i for i in range(nodes)]
            client_ports = [p + CLIENT_PORT_OFFSET for p in ports]
        else:
            found = free_ports(2 * nodes, host)
            ports, client_ports = found[:nodes], found[nodes:]
        self.nodes = [
            NodeProcess(i + 1, Address(host, ports[i]), Address(host, client_ports[i]),
                        os.path.join(self.data_dir, f"node-{i + 1}"))
            for i in range(nodes)
        ]
        self._logs: List[IO[bytes]] = []

    @property
    def peers_spec(self) -> str:
        return ",".join(f"{n.id}={n.peer_address}" for n in self.nodes)

    @property
    def client_addresses(self) -> List[str]:
        return [str(n.client_address) for n in self.nodes]

    def command(self, node: NodeProcess) -> List[str]:
        return [
            sys.executable, "-m", "raftfast.cli", "serve",
            "--id", str(node.id), "--peers", self.peers_spec, "--data-dir", node.data_dir,
            "--client-port", str(node.client_address.port), "--cluster-id", self.cluster_id,
            *self._tls_args(node.id), *self.serve_args,
        ]

    def _tls_args(self, node_id: int) -> List[str]:
        if self.tls is None:
            return []
        tls = self.tls.for_node(node_id)
        return ["--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-ca", tls.ca]

    def start(self, timeout: float = 15.0) -> None:
        """Start every node and wait until each accepts clients."""
        env = dict(os.environ)
        # run the same raftfast as this process, installed or not
        root = os.path.dirname(os.path.dirname(os.path.abspath(raftfast.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        for node in self.nodes:
            self.start_node(node, env)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            self.wait_ready(node, deadline)

    def start_node(self, node: NodeProcess, env: Optional[dict] = None) -> None:
        os.makedirs(node.data_dir, exist_ok=True)
        if self.inherit_output:
            out = None
        else:
            node.log_path = node.data_dir + ".log"
            out = open(node.log_path, "ab")
            self._logs.append(out)
        node.process = subprocess.Popen(
            self.command(node), stdout=out, stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL, env=env, start_new_session=not self.inherit_output,
        )

    def wait_ready(self, node: NodeProcess, deadline: float) -> None:
        address = node.client_address
        while True:
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(f"node {node.id} exited with code {node.process.returncode}"
                                   + (f"; see {node.log_path}" if node.log_path else ""))
            try:
                with socket.create_connection((address.host, address.port), timeout=0.2) as sock:
                    if self.tls is not None:  # a whole handshake, so the node has no refusal to log
                        self.tls.for_node(node.id).peer_client_context.wrap_socket(sock).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.id} did not start listening on {address} ({exc})") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every node, then SIGKILL what is still running after `timeout`."""
        running = [n.process for n in self.nodes if n.process is not None and n.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def cleanup(self) -> None:
        """Remove the data directory if this cluster created it."""
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()
