"""The certificate directory `raftfast certs init DIR` writes and `--tls DIR` reads.

    DIR/ca.pem                       the cluster CA (ca-key.pem: its key, kept for issuing more)
    DIR/node-N.pem, node-N-key.pem   node N: DNS SAN `node-N` (its identity), localhost, 127.0.0.1
    DIR/client.pem, client-key.pem   a client: may read and write
    DIR/admin.pem, admin-key.pem     an admin: may also change membership and move leadership
    DIR/client.token, admin.token    bearer tokens with those two roles, for clients without a
                                     certificate (`serve --token-file/--admin-token-file`)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Tuple

from .tls import TLSConfig

__all__ = ["CertDir"]

_NODE_CERT = re.compile(r"^node-(\d+)\.pem$")


@dataclass(frozen=True)
class CertDir:
    path: str

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def ca(self) -> str:
        return self._file("ca.pem")

    @property
    def ca_key(self) -> str:
        return self._file("ca-key.pem")

    def node(self, node_id: int) -> Tuple[str, str]:
        """(certificate, key) of node `node_id`."""
        return self._file(f"node-{node_id}.pem"), self._file(f"node-{node_id}-key.pem")

    def user(self, name: str) -> Tuple[str, str]:
        """(certificate, key) of the `client` or `admin` identity."""
        return self._file(f"{name}.pem"), self._file(f"{name}-key.pem")

    def token(self, role: str) -> str:
        """The bearer token file for `role` (`client` or `admin`)."""
        return self._file(f"{role}.token")

    def tls_config(self) -> TLSConfig:
        """Every node's TLS files, as a template: `.for_node(n)` gives node n's."""
        return TLSConfig(self._file("node-{id}.pem"), self._file("node-{id}-key.pem"), self.ca)

    def exists(self) -> bool:
        return os.path.exists(self.ca)

    def node_ids(self) -> List[int]:
        """The node ids this directory holds certificates for."""
        if not os.path.isdir(self.path):
            return []
        found = (_NODE_CERT.match(name) for name in os.listdir(self.path))
        return sorted(int(m.group(1)) for m in found if m)

    def check_nodes(self, count: int) -> None:
        """Raise ValueError unless this directory can secure nodes 1..count."""
        if not self.exists():
            raise ValueError(f"{self.path} holds no CA (ca.pem): run `raftfast certs init {self.path} --nodes {count}`")
        missing = sorted(set(range(1, count + 1)) - set(self.node_ids()))
        if missing:
            raise ValueError(
                f"{self.path} has no certificate for node(s) {', '.join(map(str, missing))}: "
                f"run `raftfast certs init {self.path} --nodes {count} --force`"
            )
