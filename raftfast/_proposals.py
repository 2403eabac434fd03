"""Selects the compiled proposal kernel when present, the pure twin otherwise."""

from . import _selection

if _selection.USE_EXTENSIONS:
    from ._proposals_c import END, take_proposals
else:
    from ._proposals_py import END, take_proposals

__all__ = ["END", "take_proposals"]
