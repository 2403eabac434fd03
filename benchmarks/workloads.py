"""The two RaftNode workloads every benchmark front end measures (one definition, no drift).

(a) a single-node leader fed `step_many` batches of 256 x 64-byte proposals;
(b) three nodes stepped in one process, messages passed in memory: the leader steps a batch,
    both followers step what it sent, the leader steps their replies (commit and apply).

`python -m benchmarks.core`, the asv suite (`bench_node.py`) and the pytest-benchmark micro
benchmarks (`micro/test_bench_node.py`) all build them from here. `RaftNode` is a parameter so
a front end can pass either twin of the protocol module (`raftfast._node_py`, `_node_c`).
This module holds no asv names (`time_`, `track_`, ...), so asv discovery finds nothing here.
"""

from __future__ import annotations

from typing import Dict, List

from raftfast.actions import Action
from raftfast.config import RaftConfig
from raftfast.events import Event

BATCH = 256
VALUE = b"v" * 64


def proposals(count: int = BATCH) -> List[object]:
    return [Event.Propose(VALUE) for _ in range(count)]


def single_leader(RaftNode):
    """A one-node cluster, ticked until it leads."""
    node = RaftNode(RaftConfig(1))
    while not node.is_leader():
        node.step(Event.Tick())
    return node


class InProcessCluster:
    """Three nodes stepped in one process, messages passed in memory; node 1 leads."""

    def __init__(self, RaftNode) -> None:
        ids = (1, 2, 3)
        self.nodes = {i: RaftNode(RaftConfig(i, ids, max_batch=BATCH, max_batch_bytes=1 << 20)) for i in ids}
        self.inbox: Dict[int, List[object]] = {i: [] for i in ids}
        self.proposals = proposals()
        while not self.nodes[1].is_leader():
            self.deliver(1, [Event.Tick()])
            self.exchange()

    def deliver(self, node_id: int, events: List[object]) -> int:
        """Step `events` at one node, queue its sends; returns how many entries it applied."""
        applied = 0
        send, apply, message, inbox = Action.Send, Action.Apply, Event.Message, self.inbox
        for action in self.nodes[node_id].step_many(events):
            kind = type(action)
            if kind is send:
                inbox[action.to].append(message(action.message))
            elif kind is apply:
                applied += 1
        return applied

    def exchange(self) -> int:
        """Followers step what the leader sent, then the leader steps their replies; returns
        the entries the leader applied."""
        inbox = self.inbox
        for i in (2, 3):
            pending, inbox[i] = inbox[i], []
            self.deliver(i, pending)
        pending, inbox[1] = inbox[1], []
        return self.deliver(1, pending)

    def round(self) -> int:
        """One batch proposed at the leader and carried to commit and apply; returns the
        entries the leader applied (committed), all of them when the round completes."""
        return self.deliver(1, self.proposals) + self.exchange()
