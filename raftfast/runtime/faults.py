"""Fault injection for one `raftfast serve` process, for chaos testing (`raftfast chaos`).

Off unless the environment names a control file: `RAFTFAST_FAULTS=PATH`. The node reads the
file at start and again on every SIGUSR1, so a test harness partitions nodes by rewriting the
file (atomically: write a temporary file, rename) and signalling:

    {"blocked": [2, 3]}

`blocked` lists the peers whose frames this node drops, both ways (`PeerTransport.blocked`);
the connections stay up, so healing is immediate, as after a switch partition that drops
packets. A file that is missing or does not parse leaves the current faults as they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Optional

from .server import RaftServer

__all__ = ["ENV", "FaultHook"]

ENV = "RAFTFAST_FAULTS"

logger = logging.getLogger("raftfast.runtime.faults")


class FaultHook:
    def __init__(self, server: RaftServer, path: str) -> None:
        self.server = server
        self.path = path

    @classmethod
    def from_environment(cls, server: RaftServer) -> Optional["FaultHook"]:
        """Install the hook if RAFTFAST_FAULTS is set (call from inside the running loop)."""
        path = os.environ.get(ENV)
        if not path:
            return None
        hook = cls(server, path)
        hook.reload()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, hook.reload)
        logger.warning("node %d: fault injection enabled (%s)", server.id, path)
        return hook

    def reload(self) -> None:
        try:
            with open(self.path) as f:
                blocked = {int(peer) for peer in json.load(f).get("blocked", ())}
        except FileNotFoundError:
            return  # nothing injected yet
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("node %d: ignoring fault file %s: %s", self.server.id, self.path, exc)
            return
        transport = self.server.transport
        if blocked != transport.blocked:
            logger.info("node %d: dropping frames to and from %s", self.server.id, sorted(blocked) or "nobody")
            transport.blocked = blocked
