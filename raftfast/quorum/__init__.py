"""Quorum math, compiled when available (see raftfast._selection)."""

from .. import _selection

if _selection.USE_EXTENSIONS:
    from ._quorum_c import VOTE_LOST, VOTE_PENDING, VOTE_WON, committed_index, vote_result
else:
    from ._quorum_py import VOTE_LOST, VOTE_PENDING, VOTE_WON, committed_index, vote_result

__all__ = ["VOTE_LOST", "VOTE_PENDING", "VOTE_WON", "committed_index", "vote_result"]
