"""RaftNode.step_many with batches of 256 x 64-byte proposals: the protocol module interpreted
(`raftfast._node_py`) and compiled (`raftfast._node_c`), side by side.

Both twins run on the kernels `raftfast.IMPLEMENTATION` names (the header says which). Each
round starts from a fresh leader (made outside the timing) and steps 16 batches through it, so
the log, which nothing compacts here, stays small however many rounds run.
"""

from __future__ import annotations


from _twins import twin_module
from benchmarks.workloads import BATCH, InProcessCluster, proposals, single_leader

BATCHES = 16
PROPOSALS = proposals()


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
        return (single_leader(RaftNode),), {}

    benchmark.pedantic(run, setup=setup, rounds=100, iterations=1, warmup_rounds=2)


def test_three_nodes_step_many(benchmark, twin):
    """3 nodes in one process: 16 x (leader step_many(256 proposals), followers, leader)."""
    RaftNode = twin_module("_node", twin).RaftNode
    benchmark.group = "RaftNode 3 nodes in-process, 16 x 256 proposals replicated"
    benchmark.extra_info["entries"] = BATCH * BATCHES

    def run(cluster):
        for _ in range(BATCHES):
            cluster.round()

    def setup():
        return (InProcessCluster(RaftNode),), {}

    benchmark.pedantic(run, setup=setup, rounds=60, iterations=1, warmup_rounds=2)
