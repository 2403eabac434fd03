"""asv: RaftNode.step_many with batches of 256 x 64-byte proposals, and the entries/s tracks.

- `time_*` (parametrised over the protocol module's twins, `raftfast._node_py` interpreted and
  `raftfast._node_c` compiled, both on the live kernels): 16 x step_many(256 proposals) from a
  fresh leader, single node and three nodes in one process.
- `track_*` (the live build, whatever `raftfast.IMPLEMENTATION` says): entries/s of the
  workloads (a) and (b) of `python -m benchmarks.core`, best of 5 short slices, and the latency
  of one replication round (leader step, followers, leader) in the 3-node workload.
"""

from __future__ import annotations

import time

import numpy as np

from . import core
from ._asv_util import TWINS, twin_module
from .workloads import InProcessCluster, proposals, single_leader

BATCHES = 16
PROPOSALS = proposals()


class StepMany:
    params = TWINS
    param_names = ["twin"]
    number = 1  # each call starts from a fresh leader (setup)
    repeat = (10, 40, 10.0)

    def setup(self, twin):
        RaftNode = twin_module("_node", twin).RaftNode
        self.node = single_leader(RaftNode)
        self.cluster = InProcessCluster(RaftNode)

    def time_single_node(self, twin):
        """16 x step_many(256 proposals): propose -> commit -> apply on a one-node leader."""
        step_many = self.node.step_many
        for _ in range(BATCHES):
            step_many(PROPOSALS)

    def time_three_nodes(self, twin):
        """16 rounds of 256 proposals replicated to two followers and applied."""
        cluster = self.cluster
        for _ in range(BATCHES):
            cluster.round()


class Throughput:
    """entries/s of the live build (the figures `python -m benchmarks.core` reports)."""

    timeout = 120

    def track_single_node_entries_per_s(self):
        return core.single_node(0.2)

    track_single_node_entries_per_s.unit = "entries/s"

    def track_three_nodes_entries_per_s(self):
        return core.three_nodes(0.2)

    track_three_nodes_entries_per_s.unit = "entries/s"


class RoundLatency:
    """Latency of one replication round of 256 proposals in the 3-node in-process workload:
    leader step_many, both followers, leader again (commit and apply), microseconds. One set of
    400 rounds (setup_cache) feeds both tracks."""

    rounds = 400

    def setup_cache(self):
        from raftfast.node import RaftNode  # the live build

        cluster = InProcessCluster(RaftNode)
        times = np.empty(self.rounds)
        clock = time.perf_counter
        for i in range(self.rounds):
            start = clock()
            cluster.round()
            times[i] = clock() - start
        p50, p99 = np.percentile(times * 1e6, [50, 99])
        return {"p50": float(p50), "p99": float(p99)}

    def track_round_p50_us(self, result):
        return result["p50"]

    track_round_p50_us.unit = "us"

    def track_round_p99_us(self, result):
        return result["p99"]

    track_round_p99_us.unit = "us"
