"""SecureListener: accept TCP connections and finish the TLS handshake before anything else.

`loop.create_server(ssl=...)` drops a connection whose handshake fails without a word (the
error is logged only in asyncio's debug mode), so an operator never learns that a peer with
the wrong CA, an expired certificate or no TLS at all knocked. This listener accepts the
sockets itself and runs each handshake with `loop.connect_accepted_socket`, which raises the
failure: every refused connection is logged with its reason (rate-limited per reason, so a
flood cannot flood the log), and only a completed handshake reaches the protocol.

Handshakes in progress are bounded (`max_handshakes`), and each has a deadline, so idle or
trickling strangers cannot pile up sockets before they have proved anything.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Callable, Optional, Set

from ..runtime.address import Address
from ..runtime.ratelog import RateLimitedLog
from .tls import describe_tls_error

__all__ = ["SecureListener"]

logger = logging.getLogger("raftfast.security")


class SecureListener:
    """`label` names the port in log lines, e.g. "node 1 peer port"."""

    def __init__(
        self,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        label: str,
        handshake_timeout: float = 5.0,
        max_handshakes: int = 64,
    ) -> None:
        self.context = context
        self.protocol_factory = protocol_factory
        self.label = label
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.ratelog = RateLimitedLog(logger)
        self._sock: Optional[socket.socket] = None
        self._accepting: Optional[asyncio.Task] = None
        self._handshakes: Set[asyncio.Task] = set()
        # connections handed over, for close(); pruned of closed ones as it grows (uvloop's
        # SSL transports cannot be weakly referenced)
        self._transports: Set[asyncio.BaseTransport] = set()
        self._prune_at = 64

    async def start(self, host: str, port: int) -> Address:
        """Listen on `host:port` (0 = any free port); returns the bound address."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=512)
        sock.setblocking(False)
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept())
        return Address(host, sock.getsockname()[1])

    def close(self) -> None:
        """Stop accepting; abort handshakes in progress and the connections this listener made."""
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for task in list(self._handshakes):
            task.cancel()
        for transport in self._transports:
            if not transport.is_closing():
                transport.abort()  # type: ignore[attr-defined]
        self._transports = set()

    def refuse(self, level: int, peer: str, reason: str) -> None:
        self.ratelog.log(level, reason, "%s: refused connection from %s: %s", self.label, peer, reason)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self._sock
        assert sock is not None
        while True:
            try:
                conn, address = await loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # EMFILE and friends: back off rather than spin
                self.ratelog.log(logging.ERROR, "accept", "%s: cannot accept: %s", self.label, exc)
                await asyncio.sleep(0.1)
                continue
            peer = f"{address[0]}:{address[1]}"
            if len(self._handshakes) >= self.max_handshakes:
                conn.close()
                self.refuse(logging.WARNING, peer, f"{self.max_handshakes} TLS handshakes already in progress")
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handshake(conn, peer))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_accepted_socket(
                self.protocol_factory, conn, ssl=self.context, ssl_handshake_timeout=self.handshake_timeout,
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # anything a stranger can cause is a refusal, never a crash
            conn.close()
            reason = describe_tls_error(exc)
            # a bare connect-and-close (a port probe) is not an attack: say so quietly
            level = logging.INFO if reason.startswith("connection closed") else logging.WARNING
            self.refuse(level, peer, reason)
            return
        transports = self._transports
        transports.add(transport)
        if len(transports) >= self._prune_at:
            self._transports = {t for t in transports if not t.is_closing()}
            self._prune_at = max(64, 2 * len(self._transports))
