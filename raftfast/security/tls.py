"""TLS for the peer and client ports, on the standard `ssl` module.

- The peer port is mutual TLS: both ends present a certificate signed by the cluster CA, and
  each checks that the other's certificate names the node it claims to be (a DNS or URI SAN
  `node-N`): the acceptor against the id in the peer's hello, the dialer against the node it
  dialed. Hostname checking is off because node identity, not an address, is what matters.
- The client port asks for a client certificate but does not require one: a client may prove
  who it is with a bearer token instead (`auth.py`). A certificate that is presented must
  still verify against the CA.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Dict, Optional, Tuple

__all__ = ["TLSConfig", "certificate_names", "describe_tls_error", "names_node", "node_name"]

# OpenSSL reasons meaning "what arrived is not a TLS handshake at all"
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
                      "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNSUPPORTED_PROTOCOL"})


def node_name(node_id: int) -> str:
    """The name a node's certificate carries as its identity."""
    return f"node-{node_id}"


def certificate_names(peercert: Optional[Dict[str, Any]]) -> Tuple[str, ...]:
    """The DNS and URI subject alternative names of a verified certificate (as
    `SSLSocket.getpeercert()` returns it)."""
    if not peercert:
        return ()
    return tuple(value for kind, value in peercert.get("subjectAltName", ()) if kind in ("DNS", "URI"))


def names_node(peercert: Optional[Dict[str, Any]], node_id: int) -> bool:
    return node_name(node_id) in certificate_names(peercert)


def describe_tls_error(exc: BaseException) -> str:
    """Why a TLS handshake failed, in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or str(exc)
        if exc.verify_code in (2, 18, 19, 20, 21):  # X509_V_ERR_*: no issuer, self-signed, unknown issuer
            return f"certificate not signed by the cluster CA ({message})"
        return f"certificate rejected: {message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _NOT_TLS:
            return f"not a TLS handshake: plaintext is refused on this port ({reason})"
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no certificate presented: this port requires one"
        if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_")):
            return f"the other side refused the handshake ({reason})"
        return f"TLS handshake failed ({reason or exc})"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or "taking longer" in str(exc):
        return "TLS handshake not completed in time"
    if isinstance(exc, (ConnectionError, EOFError)):
        return f"connection closed during the TLS handshake ({type(exc).__name__})"
    return f"TLS handshake failed ({type(exc).__name__}: {exc})"


@dataclass(frozen=True)
class TLSConfig:
    """This node's certificate and key, and the cluster CA: paths to PEM files."""

    cert: str
    key: str
    ca: str

    def for_node(self, node_id: int) -> "TLSConfig":
        """This config with `{id}` in the certificate and key paths replaced by `node_id`, so
        one template (`certs/node-{id}.pem`) serves every node of a local cluster."""
        return TLSConfig(self.cert.replace("{id}", str(node_id)), self.key.replace("{id}", str(node_id)), self.ca)

    def check(self) -> None:
        """Raise ValueError, naming the file, unless the contexts can be built."""
        for what, path in (("certificate", self.cert), ("key", self.key), ("CA", self.ca)):
            if not os.path.isfile(path):
                raise ValueError(f"TLS {what} file {path!r} does not exist")
        try:
            self.peer_server_context  # noqa: B018 - building it loads and checks every file
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load TLS files {self.cert}, {self.key}, {self.ca}: {exc}") from None

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        server = purpose is ssl.Purpose.CLIENT_AUTH
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        context.load_verify_locations(cafile=self.ca)
        return context

    @cached_property
    def peer_server_context(self) -> ssl.SSLContext:
        context = self._context(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    @cached_property
    def peer_client_context(self) -> ssl.SSLContext:
        context = self._context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = False  # the node-N SAN is checked instead (names_node)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    @cached_property
    def client_port_context(self) -> ssl.SSLContext:
        context = self._context(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_OPTIONAL  # or a bearer token
        return context
