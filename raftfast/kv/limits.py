"""ClientLimits: the client port's bounds on pending requests and on slow requests.

Both are checked a few times a second, not per request, so the request path pays nothing
but one timestamp per read:

- **Pending requests.** When the requests received and not yet answered (writes waiting for
  their entry, reads waiting for ReadIndex) reach `max_pending`, the node stops reading from
  every client connection: TCP flow control pushes back on the clients instead of the node's
  memory growing with a log it cannot commit fast enough. Reading resumes below half the
  limit. The bound is soft by at most what arrives between two checks.
- **Slow requests.** A connection whose request has been arriving for longer than
  `request_timeout` (a slow-loris client trickling bytes to hold a socket and a buffer) is
  closed. Connections the node itself stopped reading from are not judged.

Each event is logged with its reason (rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Optional

from ..runtime.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from .service import KVService

__all__ = ["ClientLimits", "MAX_PENDING", "REQUEST_TIMEOUT"]

logger = logging.getLogger("raftfast.kv.limits")

MAX_PENDING = 1 << 16
REQUEST_TIMEOUT = 10.0


class ClientLimits:
    def __init__(self, service: "KVService", *, max_pending: int = MAX_PENDING,
                 request_timeout: float = REQUEST_TIMEOUT, interval: float = 0.1) -> None:
        if max_pending < 1 or request_timeout <= 0 or interval <= 0:
            raise ValueError("max_pending, request_timeout and interval must be positive")
        self.service = service
        self.max_pending = max_pending
        self.request_timeout = request_timeout
        self.interval = min(interval, request_timeout / 4)
        self.overloaded = False
        self.ratelog = RateLimitedLog(logger)
        self._handle: Optional[asyncio.TimerHandle] = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _label(self) -> str:
        raft = self.service.raft
        return f"node {raft.id}" if raft is not None else "node ?"

    def _check(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._check)
        self._check_pending()
        if not self.overloaded:
            self._check_slow(time.monotonic())

    def _check_pending(self) -> None:
        pending = self.service.pending_requests()
        connections = list(self.service._connections)
        if pending >= self.max_pending:
            if not self.overloaded:
                self.overloaded = True
                self.ratelog.log(logging.WARNING, "pending",
                                 "%s: %d client requests pending, the limit is %d: not reading from clients "
                                 "until they drain", self._label(), pending, self.max_pending)
            for conn in connections:  # every check: a connection may have resumed or just arrived
                if conn.transport.is_reading():
                    conn.transport.pause_reading()
        elif self.overloaded and pending <= self.max_pending // 2:
            self.overloaded = False
            logger.info("%s: %d client requests pending: reading from clients again", self._label(), pending)
            now = time.monotonic()
            for conn in connections:
                transport = conn.transport
                # not one whose replies back up: it stays paused until the client reads them
                if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]:
                    transport.resume_reading()
                conn.partial_since = now  # the pause was ours, not the client's

    def _check_slow(self, now: float) -> None:
        timeout = self.request_timeout
        for conn in list(self.service._connections):
            if not conn.buffer or now - conn.partial_since <= timeout:
                continue
            transport = conn.transport
            if not transport.is_reading():  # paused by us: the client is not to blame
                conn.partial_since = now
                continue
            self.ratelog.log(logging.WARNING, "slow",
                             "%s: closing client connection %s: a request still incomplete after %g s "
                             "(%d bytes so far)", self._label(), conn.peer, timeout, len(conn.buffer))
            transport.abort()
