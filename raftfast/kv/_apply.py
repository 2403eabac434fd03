"""`apply_batch`, `apply_runs`, `restore_state`, `scan_writes`, `snapshot_state`: the compiled twin (`_apply_c`) when built, else `_apply_py`.

The key-value layer's kernel follows `raftfast._selection` like the core's: compiled only when
every kernel was built.
"""

from .. import _selection

if _selection.USE_EXTENSIONS:
    from ._apply_c import apply_batch, apply_runs, restore_state, scan_writes, snapshot_state
else:
    from ._apply_py import apply_batch, apply_runs, restore_state, scan_writes, snapshot_state

__all__ = ["apply_batch", "apply_runs", "restore_state", "scan_writes", "snapshot_state"]
