"""The build under test is the one the test leg asked for.

scripts/test runs the suite twice and sets RAFTFAST_EXPECT_IMPLEMENTATION for each leg, so a
compiled leg that silently fell back to pure Python (or the reverse) fails here instead of
passing twice against the same code.
"""

import os

import pytest

import raftfast
from raftfast import _selection


def test_the_requested_implementation_is_live():
    expected = os.environ.get("RAFTFAST_EXPECT_IMPLEMENTATION")
    if not expected:
        pytest.skip("RAFTFAST_EXPECT_IMPLEMENTATION is not set (scripts/test sets it)")
    assert raftfast.IMPLEMENTATION == expected


def test_every_module_agrees_with_the_selection():
    import raftfast._proposals
    import raftfast.codec
    import raftfast.log._entries
    import raftfast.node
    import raftfast.quorum
    from raftfast import Action

    compiled = raftfast.IMPLEMENTATION == "cython"
    assert _selection.USE_EXTENSIONS is compiled
    modules = {
        raftfast.node.RaftNode.__module__,
        raftfast.log._entries.EntryLog.__module__,
        raftfast.quorum.committed_index.__module__,
        raftfast.codec.encode.__module__,
        Action.Apply.__module__,
        raftfast._proposals.take_proposals.__module__,
    }
    suffix = "_c" if compiled else "_py"
    assert all(m.endswith(suffix) for m in modules), modules
