"""What a client presents to a secured cluster: the CA to verify nodes with, and a client
certificate or a bearer token (or both).

Paths, not contexts, so the value pickles into load-generator processes; each process builds
its own `ssl.SSLContext`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .auth import ADMIN_ROLE, CLIENT_ROLE, read_token
from .layout import CertDir

__all__ = ["ClientCredentials"]


@dataclass(frozen=True)
class ClientCredentials:
    ca: str
    cert: Optional[str] = None
    key: Optional[str] = None
    token_file: Optional[str] = None

    @classmethod
    def from_cert_dir(cls, path: str, *, admin: bool = False) -> "ClientCredentials":
        """The client (or admin) identity that `raftfast certs init` wrote to `path`."""
        layout = CertDir(path)
        if not layout.exists():
            raise ValueError(f"{path} holds no CA (ca.pem): run `raftfast certs init {path}`")
        cert, key = layout.user(ADMIN_ROLE if admin else CLIENT_ROLE)
        return cls(layout.ca, cert, key)

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the node's certificate against the CA and the address dialed (nodes'
        certificates name 127.0.0.1, localhost and any `certs init --host`)."""
        context = ssl.create_default_context(cafile=self.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context

    def token(self) -> Optional[bytes]:
        return read_token(self.token_file) if self.token_file else None

    def client_options(self) -> Dict[str, Any]:
        """Keyword arguments for `KVClient`."""
        return {"ssl": self.ssl_context(), "token": self.token()}
