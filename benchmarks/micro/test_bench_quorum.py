"""Quorum math: commit index from match indexes, vote tallies; both twins side by side."""

from __future__ import annotations

from _twins import twin_module


def test_committed_index_3(benchmark, twin):
    """committed_index over 3 voters' match indexes (it sorts its argument: a fresh list)."""
    committed_index = twin_module("quorum._quorum", twin).committed_index
    benchmark.group = "committed_index 3 voters"
    assert benchmark(lambda: committed_index([1_000_210, 1_000_000, 1_000_100])) == 1_000_100


def test_committed_index_5(benchmark, twin):
    committed_index = twin_module("quorum._quorum", twin).committed_index
    benchmark.group = "committed_index 5 voters"
    assert benchmark(lambda: committed_index([900, 1000, 700, 1200, 1100])) == 1000


def test_vote_result_5(benchmark, twin):
    kernel = twin_module("quorum._quorum", twin)
    vote_result = kernel.vote_result
    voters, granted, rejected = (1, 2, 3, 4, 5), {1, 3, 5}, {2}
    benchmark.group = "vote_result 5 voters"
    assert benchmark(vote_result, voters, granted, rejected) == kernel.VOTE_WON
