"""A seeded, simulated network: per-message drop, duplication and delay, and partitions.

Time is the simulator's tick count. Every fault is drawn from one `random.Random(seed)` in the
order messages are sent, so the same seed and the same sends give the same deliveries.
"""

from __future__ import annotations

import heapq
import random
from typing import Dict, Iterable, List, Tuple

from ..messages import Message
from ..types import NodeId

_REST = 0  # the group of every node no partition names


class Network:
    """Messages in flight, ordered by delivery time.

    `latency` is the delay of an undisturbed message (ticks, at least 1 so a node never hears a
    reply within the turn that sent the request); with probability `reorder` a message takes up
    to `max_delay` extra ticks, which lets later messages overtake it. Partitions are checked at
    delivery, so a partition also cuts the messages already in flight across it.
    """

    def __init__(
        self,
        seed: int,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        latency: int = 1,
        max_delay: int = 5,
    ) -> None:
        for name, p in (("drop", drop), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if latency < 1 or max_delay < 0:
            raise ValueError("latency must be >= 1 tick and max_delay >= 0")
        self.rng = random.Random(seed)
        self.drop = drop
        self.duplicate = duplicate
        self.reorder = reorder
        self.latency = latency
        self.max_delay = max_delay
        self._queue: List[Tuple[int, int, NodeId, NodeId, Message]] = []
        self._seq = 0
        self._group: Dict[NodeId, int] = {}
        self._next_group = 1
        self.sent = self.dropped = self.duplicated = self.cut = self.delivered = 0

    # -- partitions ------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[NodeId]]) -> None:
        """Split the network: nodes talk only within their group. Nodes no group names form
        one more group together, which is also where a node started later lands."""
        self._group = {}
        for group in groups:
            gid = self._new_group()
            for node in group:
                self._group[node] = gid

    def isolate(self, node: NodeId) -> None:
        """Cut `node` off from everyone, keeping any partition among the others."""
        self._group[node] = self._new_group()

    def heal(self) -> None:
        self._group = {}

    def connected(self, a: NodeId, b: NodeId) -> bool:
        group = self._group
        return group.get(a, _REST) == group.get(b, _REST)

    @property
    def partitioned(self) -> bool:
        return bool(self._group)

    def _new_group(self) -> int:
        self._next_group += 1
        return self._next_group

    # -- traffic ---------------------------------------------------------------------------

    def send(self, src: NodeId, dst: NodeId, message: Message, now: int) -> None:
        self.sent += 1
        rng = self.rng
        # A fault with probability 0 draws nothing, which keeps a fault-free network cheap.
        if self.drop and rng.random() < self.drop:
            self.dropped += 1
            return
        copies = 1
        if self.duplicate and rng.random() < self.duplicate:
            copies = 2
            self.duplicated += 1
        for _ in range(copies):
            delay = self.latency
            if self.reorder and self.max_delay and rng.random() < self.reorder:
                delay += rng.randint(1, self.max_delay)
            self._seq += 1
            heapq.heappush(self._queue, (now + delay, self._seq, src, dst, message))

    def deliver(self, now: int) -> List[Tuple[NodeId, NodeId, Message]]:
        """Every (src, dst, message) due by `now`, in delivery order, minus those a partition
        cuts."""
        queue = self._queue
        out = []
        while queue and queue[0][0] <= now:
            _, _, src, dst, message = heapq.heappop(queue)
            if self.connected(src, dst):
                out.append((src, dst, message))
            else:
                self.cut += 1
        self.delivered += len(out)
        return out

    def in_flight(self) -> int:
        return len(self._queue)

    def describe(self) -> str:
        groups: Dict[int, List[NodeId]] = {}
        for node, gid in sorted(self._group.items()):
            groups.setdefault(gid, []).append(node)
        cut = " | ".join(str(g) for g in groups.values()) if groups else "none"
        return (
            f"partition {cut} (others together); sent {self.sent}, dropped {self.dropped}, "
            f"duplicated {self.duplicated}, cut {self.cut}, delivered {self.delivered}, "
            f"in flight {len(self._queue)}"
        )
