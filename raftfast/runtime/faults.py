"""Fault injection for one `raftfast serve` process, for chaos testing (`raftfast chaos`).

Off unless the environment names a control file: `RAFTFAST_FAULTS=PATH`. The node reads the
file at start and again on every SIGUSR1, so a test harness partitions nodes by rewriting the
file (atomically: write a temporary file, rename) and signalling:

    {"blocked": [2, 3], "drop_to": [4], "drop_from": [5]}

`blocked` lists the peers whose frames this node drops both ways; `drop_to` the peers it
stops sending to, and `drop_from` those it stops hearing from (a one-way partition): see
`PeerTransport.drop_to` and `drop_from`. Every key is optional and an absent key means nobody.
The connections stay up, so healing is immediate, as after a switch partition that drops
packets. A file that is missing or does not parse leaves the current faults as they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Any, Optional, Set, Tuple

from .server import RaftServer

__all__ = ["ENV", "FaultHook", "parse_faults"]

ENV = "RAFTFAST_FAULTS"

logger = logging.getLogger("raftfast.runtime.faults")


def _ids(spec: dict, key: str) -> Set[int]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise ValueError(f"{key!r} must be a list of node ids, got {value!r}")
    return set(value)


def parse_faults(spec: Any) -> Tuple[Set[int], Set[int]]:
    """(drop_to, drop_from) from a fault file's JSON; ValueError naming what is wrong."""
    if not isinstance(spec, dict):
        raise ValueError(f"a fault file holds a JSON object, got {type(spec).__name__}")
    unknown = set(spec) - {"blocked", "drop_to", "drop_from"}
    if unknown:
        raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
    both = _ids(spec, "blocked")
    return both | _ids(spec, "drop_to"), both | _ids(spec, "drop_from")


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
                drop_to, drop_from = parse_faults(json.load(f))
        except FileNotFoundError:
            return  # nothing injected yet
        except (OSError, ValueError) as exc:
            logger.warning("node %d: ignoring fault file %s: %s", self.server.id, self.path, exc)
            return
        transport = self.server.transport
        if drop_to != transport.drop_to or drop_from != transport.drop_from:
            logger.info("node %d: dropping frames to %s and from %s", self.server.id,
                        sorted(drop_to) or "nobody", sorted(drop_from) or "nobody")
            transport.drop_to = drop_to
            transport.drop_from = drop_from
