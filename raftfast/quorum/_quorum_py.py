"""Pure-Python quorum math: commit index from match indexes, vote tallies."""

from __future__ import annotations

from typing import Iterable, List

VOTE_PENDING = 0
VOTE_WON = 1
VOTE_LOST = -1


def committed_index(matches: List[int]) -> int:
    """The highest index that a majority of `matches` (one per voter) has reached.

    Sorts `matches` in place. An empty voter set commits nothing.
    """
    n = len(matches)
    if n == 0:
        return 0
    matches.sort()
    # ascending: the (n - majority)th element is held by a majority (itself and all above it)
    return matches[n - (n // 2 + 1)]


def vote_result(voters: Iterable[int], granted: Iterable[int], rejected: Iterable[int]) -> int:
    """VOTE_WON once a majority of `voters` granted, VOTE_LOST once a majority cannot be
    reached, VOTE_PENDING otherwise. Replies from non-voters do not count."""
    voter_set = set(voters)
    majority = len(voter_set) // 2 + 1
    yes = len(voter_set.intersection(granted))
    if yes >= majority:
        return VOTE_WON
    no = len(voter_set.intersection(rejected))
    if len(voter_set) - no < majority:
        return VOTE_LOST
    return VOTE_PENDING
