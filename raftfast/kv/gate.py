"""The client port's front door when TLS is on: no request is served before the client has an
identity, and admin requests need the admin role.

A connection whose TLS handshake carried a client certificate (verified against the cluster CA
by `SecureListener`) has its identity at once and goes straight to the KV service's
connection protocol. Otherwise an `AuthGate` holds it: the first request must be AUTH with a
bearer token; any other request is answered ERROR "unauthenticated" and the connection is
closed; a wrong token is answered ERROR and closed; no AUTH within `auth_timeout` closes it.
Every refusal is logged with its reason, rate-limited per kind of reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Callable, Optional

from ..runtime.ratelog import RateLimitedLog
from ..security.auth import ClientAuth, Identity
from .protocol import REQUEST, Op, ProtocolError, Status, check_request, encode_response

__all__ = ["AuthGate", "ClientPortSecurity"]

logger = logging.getLogger("raftfast.kv.gate")

UNAUTHENTICATED = b"unauthenticated: this node requires a client certificate or an AUTH token"


class ClientPortSecurity:
    """TLS and the authentication policy of one node's client port."""

    def __init__(self, context: ssl.SSLContext, auth: ClientAuth, *, auth_timeout: float = 10.0) -> None:
        self.context = context
        self.auth = auth
        self.auth_timeout = auth_timeout
        self.ratelog = RateLimitedLog(logger)

    def refuse(self, label: str, peer: str, reason: str, kind: object) -> None:
        """Log a refusal, at most every few seconds per `kind` (strangers can repeat them fast)."""
        self.ratelog.log(logging.WARNING, kind, "%s: refused client %s: %s", label, peer, reason)

    def admin_refusal(self, identity: Optional[Identity], op: int, peer: str, label: str) -> Optional[bytes]:
        """None if `identity` may make this admin request, else the error to answer (logged)."""
        if identity is not None and identity.is_admin:
            return None
        name = Op(op).name
        # one line per identity and request: an identified client is named in the audit trail
        self.refuse(label, peer, f"{name} by {identity or 'an unidentified client'}: needs the admin role",
                    ("admin", identity, name))
        return f"forbidden: {name} needs the admin role".encode()


class AuthGate(asyncio.Protocol):
    """One client connection until it has an identity; then `make_connection()` takes over
    the transport (its `identity` set), with whatever bytes followed the AUTH request."""

    def __init__(self, security: ClientPortSecurity, make_connection: Callable[[], asyncio.Protocol], *,
                 label: str, max_request: int) -> None:
        self.security = security
        self.make_connection = make_connection
        self.label = label
        self.max_request = max_request
        self.transport: Optional[asyncio.Transport] = None
        self.peer = "?"
        self.buffer = b""
        self.deadline: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host_port = transport.get_extra_info("peername")
        self.peer = f"{host_port[0]}:{host_port[1]}" if host_port else "?"
        identity = self.security.auth.from_certificate(transport.get_extra_info("peercert"))
        if identity is not None:
            self._hand_over(identity, b"")
            return
        self.deadline = asyncio.get_running_loop().call_later(self.security.auth_timeout, self._expired)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.deadline is not None:
            self.deadline.cancel()

    def _expired(self) -> None:
        self.deadline = None
        self._refuse(f"no credentials within {self.security.auth_timeout:g} s", "timeout")

    def _refuse(self, reason: str, kind: str) -> None:
        self.security.refuse(self.label, self.peer, reason, kind)
        transport = self.transport
        if transport is not None:
            transport.close()  # after the error replies already written

    def _hand_over(self, identity: Identity, rest: bytes) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        conn = self.make_connection()
        conn.identity = identity  # type: ignore[attr-defined]
        transport = self.transport
        assert transport is not None
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if rest:
            conn.data_received(rest)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # refused already: what is still arriving is not read
        data = self.buffer + data if self.buffer else data
        self.buffer = b""
        head = REQUEST.size
        if len(data) < head:  # the first request is not complete yet
            if len(data) >= 4 and int.from_bytes(data[:4], "little") > self.max_request:
                self._refuse(f"a request of {int.from_bytes(data[:4], 'little')} bytes before authenticating", "protocol")
            else:
                self.buffer = data
            return
        length, op, rid, _cid, _seq, _ack, klen, vlen, elen = REQUEST.unpack_from(data)
        try:
            check_request(length, op, klen, vlen, elen, self.max_request)
        except ProtocolError as exc:
            self._refuse(f"bad request before authenticating: {exc}", "protocol")
            return
        end = 4 + length
        if end > len(data):
            self.buffer = data
            return
        transport = self.transport
        assert transport is not None
        if op != Op.AUTH:
            transport.write(encode_response(rid, Status.ERROR, UNAUTHENTICATED))
            self._refuse(f"{Op(op).name} without a client certificate or an AUTH token", "unauthenticated")
            return
        auth = self.security.auth
        if not auth.accepts_tokens:
            transport.write(encode_response(rid, Status.ERROR, b"this node accepts no tokens: present a client certificate"))
            self._refuse("AUTH, but this node accepts no tokens", "token")
            return
        identity = auth.from_token(bytes(data[head : head + klen]))
        if identity is None:
            transport.write(encode_response(rid, Status.ERROR, b"authentication failed: unknown token"))
            self._refuse("AUTH with an unknown token", "token")
            return
        transport.write(encode_response(rid, Status.OK, identity.role.encode()))
        self._hand_over(identity, data[end:])
