"""Selects the compiled entry kernel when present, the pure twin otherwise."""

from .. import _selection

if _selection.USE_EXTENSIONS:
    from ._entries_c import EntryBatch, EntryLog
else:
    from ._entries_py import EntryBatch, EntryLog

__all__ = ["EntryBatch", "EntryLog"]
