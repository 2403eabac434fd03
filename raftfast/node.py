"""RaftNode: the compiled build of the protocol (`_node_c`) when present, else the source.

Both are the same code, `_node_py.py`; see `raftfast._selection`.
"""

from . import _selection

if _selection.USE_EXTENSIONS:
    from ._node_c import RaftNode
else:
    from ._node_py import RaftNode

__all__ = ["RaftNode"]
