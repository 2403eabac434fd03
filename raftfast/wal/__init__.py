"""The durable write-ahead log: `WalLog.open(directory)` is a crash-safe RaftLog.

On-disk format and recovery rules: docs/wal.md.
"""

from .fileio import FileIO
from .wal import WalLog

__all__ = ["FileIO", "WalLog"]
