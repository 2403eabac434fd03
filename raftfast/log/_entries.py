"""Selects the compiled entry kernel when present, the pure twin otherwise."""

from .. import _selection

if _selection.USE_EXTENSIONS:
    from ._entries_c import EntryLog  # noqa: F401
else:
    from ._entries_py import EntryLog  # noqa: F401
