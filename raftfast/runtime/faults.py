"""Fault injection for one `raftfast serve` process, for chaos testing (`raftfast chaos`).

Off unless the environment names a control file: `RAFTFAST_FAULTS=PATH`. The node reads the
file at start and again on every SIGUSR1, so a test harness partitions nodes and moves
leadership by rewriting the file (atomically: write a temporary file, rename) and signalling:

    {"blocked": [2, 3], "transfer": [7, 2]}

- `blocked`: peer ids whose frames this node drops, both ways (`PeerTransport.blocked`); the
  connections stay up, so healing is immediate, as after a switch partition that drops packets.
- `transfer`: `[n, target]` steps `Event.TransferLeadership(target)` once per new `n` (a node
  that is not leader ignores it, as the protocol does).

A file that is missing or does not parse leaves the current faults as they are, with a warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Optional

from ..events import Event
from .server import RaftServer

__all__ = ["ENV", "FaultHook"]

ENV = "RAFTFAST_FAULTS"

logger = logging.getLogger("raftfast.runtime.faults")


class FaultHook:
    def __init__(self, server: RaftServer, path: str) -> None:
        self.server = server
        self.path = path
        self._transfer_seen: Optional[int] = None

    @classmethod
    def from_environment(cls, server: RaftServer) -> Optional["FaultHook"]:
        """Install the hook if RAFTFAST_FAULTS is set (call from inside the running loop)."""
        path = os.environ.get(ENV)
        if not path:
            return None
        hook = cls(server, path)
        hook.reload(startup=True)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, hook.reload)
        logger.warning("node %d: fault injection enabled (%s)", server.id, path)
        return hook

    def reload(self, startup: bool = False) -> None:
        """Apply the file; at startup a transfer already in it is old news, not a request."""
        try:
            with open(self.path) as f:
                spec = json.load(f)
            blocked = {int(peer) for peer in spec.get("blocked", ())}
            transfer = spec.get("transfer")
            if transfer is not None:
                transfer = (int(transfer[0]), int(transfer[1]))
        except FileNotFoundError:
            return  # nothing injected yet
        except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
            logger.warning("node %d: ignoring fault file %s: %s", self.server.id, self.path, exc)
            return
        transport = self.server.transport
        if blocked != transport.blocked:
            logger.info("node %d: dropping frames to and from %s", self.server.id, sorted(blocked) or "nobody")
            transport.blocked = blocked
        if transfer is not None and transfer[0] != self._transfer_seen:
            self._transfer_seen = transfer[0]
            if startup:
                return
            logger.info("node %d: asked to transfer leadership to node %d", self.server.id, transfer[1])
            self.server.submit(Event.TransferLeadership(transfer[1]))
