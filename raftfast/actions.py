"""Outputs of `RaftNode.step`: carry them out in the order returned; ignore unknown kinds.

`Action.Apply` and friends are compiled dataclasses in the compiled build (one is built per
committed entry, so their construction cost is on the hot path) and plain dataclasses in the
pure build; both have the same fields, defaults, equality and repr.
"""

from . import _selection

if _selection.USE_EXTENSIONS:
    from ._actions_c import Action
else:
    from ._actions_py import Action

__all__ = ["Action"]
