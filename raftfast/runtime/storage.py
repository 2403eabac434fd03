"""Opening a node's log: a durable WalLog in a data directory, or a MemoryLog without one."""

from __future__ import annotations

import os
from typing import Any, Optional

from ..log import MemoryLog

__all__ = ["open_log"]


def open_log(data_dir: Optional[str]) -> Any:
    """`WalLog.open(data_dir/wal)` (created if missing), or a MemoryLog when `data_dir` is None."""
    if data_dir is None:
        return MemoryLog()
    from ..wal import WalLog  # imported here: a memory-only node needs no WAL

    path = os.path.join(data_dir, "wal")
    os.makedirs(path, exist_ok=True)
    return WalLog.open(path)
