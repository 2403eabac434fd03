"""RaftNode.step_many with batches of 256 x 64-byte proposals: the protocol module interpreted
(`raftfast._node_py`) and compiled (`raftfast._node_c`), side by side.

Both twins run on the kernels `raftfast.IMPLEMENTATION` names (the header says which). Each
round starts from a fresh leader (made outside the timing) and steps 16 batches through it, so
the log, which nothing compacts here, stays small however many rounds run.
"""

from __future__ import annotations

from typing import Dict, List

from raftfast.actions import Action
from raftfast.config import RaftConfig
from raftfast.events import Event

from _twins import twin_module

BATCH = 256
BATCHES = 16
VALUE = b"v" * 64
PROPOSALS = [Event.Propose(VALUE) for _ in range(BATCH)]


def _single_leader(RaftNode):
    node = RaftNode(RaftConfig(1))
    while not node.is_leader():
        node.step(Event.Tick())
    return node


class _Cluster:
    """Three nodes stepped in one process, messages passed in memory (as benchmarks.core)."""

    def __init__(self, RaftNode) -> None:
        ids = (1, 2, 3)
        self.nodes = {i: RaftNode(RaftConfig(i, ids, max_batch=BATCH, max_batch_bytes=1 << 20)) for i in ids}
        self.inbox: Dict[int, List[object]] = {i: [] for i in ids}
        while not self.nodes[1].is_leader():
            self.deliver(1, [Event.Tick()])
            self.exchange()

    def deliver(self, node_id: int, events: List[object]) -> int:
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
        for i in (2, 3):
            pending, self.inbox[i] = self.inbox[i], []
            self.deliver(i, pending)
        pending, self.inbox[1] = self.inbox[1], []
        return self.deliver(1, pending)

    def round(self) -> int:
        committed = 0
        for _ in range(BATCHES):
            committed += self.deliver(1, PROPOSALS)
            committed += self.exchange()
        return committed


def test_single_node_step_many(benchmark, twin):
    """16 x step_many(256 proposals) on a single-node leader: propose -> commit -> apply."""
    RaftNode = twin_module("_node", twin).RaftNode
    benchmark.group = "RaftNode single node, 16 x step_many(256 proposals)"
    benchmark.extra_info["entries"] = BATCH * BATCHES

    def run(node):
        for _ in range(BATCHES):
            node.step_many(PROPOSALS)
        return node

    def setup():
        return (_single_leader(RaftNode),), {}

    benchmark.pedantic(run, setup=setup, rounds=100, iterations=1, warmup_rounds=2)


def test_three_nodes_step_many(benchmark, twin):
    """3 nodes in one process: 16 x (leader step_many(256 proposals), followers, leader)."""
    RaftNode = twin_module("_node", twin).RaftNode
    benchmark.group = "RaftNode 3 nodes in-process, 16 x 256 proposals replicated"
    benchmark.extra_info["entries"] = BATCH * BATCHES

    def setup():
        return (_Cluster(RaftNode),), {}

    benchmark.pedantic(lambda cluster: cluster.round(), setup=setup, rounds=60, iterations=1, warmup_rounds=2)
