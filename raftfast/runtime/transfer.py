"""Leadership transfer, awaited (thesis §3.10).

The node answers `Event.TransferLeadership` with no action of its own: it catches the target
up, sends it TimeoutNow, and the target's election does the rest (or the node gives up after an
election timeout). So the outcome is watched: the call returns once this node follows the
target, and says so if someone else took over or nothing happened in time.
"""

from __future__ import annotations

import asyncio

from ..errors import NotLeaderError
from ..events import Event
from ..types import NodeId
from .server import RaftServer

__all__ = ["transfer_leadership"]


async def transfer_leadership(server: RaftServer, target: NodeId, timeout: float = 5.0) -> None:
    """Hand leadership from `server` (the leader) to voter `target`.

    Raises NotLeaderError (this node is not the leader, or a node other than `target` took
    over), ValueError (`target` is not a voter) or TimeoutError."""
    node = server.node
    if not node.is_leader():
        raise NotLeaderError(node.leader)
    if target == node.id:
        return
    if target not in node.members:
        raise ValueError(f"node {target} is not a voting member")
    server.submit(Event.TransferLeadership(target))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        await asyncio.sleep(server.tick_interval)
        if not node.is_leader():
            if node.leader == target:
                return
            if node.leader is not None:
                raise NotLeaderError(node.leader)
    raise TimeoutError(f"node {target} did not take over within {timeout:g} s")
