"""raftfast: a performance-tuned, deterministic sans-IO Raft consensus core.

    from raftfast import RaftNode, RaftConfig, Event, Action

`RaftNode.step(event) -> list[Action]` is the whole protocol; the caller does the I/O.
"""

from ._selection import IMPLEMENTATION
from .actions import Action
from .config import RaftConfig
from .errors import ConfigInProgressError, EncodingError, NotLeaderError, RaftError, StorageError
from .events import Event
from .log import MemoryLog, RaftLog
from .node import RaftNode
from .messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    PreVote,
    PreVoteReply,
    ReadProbe,
    ReadProbeReply,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from .wal import WalLog
from .types import EntryKind, HardState, Index, LogEntry, Membership, NodeId, Role, Snapshot, Term

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION",
    "Action",
    "AppendEntries",
    "AppendEntriesReply",
    "ConfigInProgressError",
    "EncodingError",
    "EntryKind",
    "Event",
    "HardState",
    "Index",
    "InstallSnapshot",
    "InstallSnapshotReply",
    "LogEntry",
    "Membership",
    "MemoryLog",
    "Message",
    "NodeId",
    "NotLeaderError",
    "PreVote",
    "PreVoteReply",
    "RaftConfig",
    "RaftError",
    "RaftLog",
    "RaftNode",
    "ReadProbe",
    "ReadProbeReply",
    "RequestVote",
    "RequestVoteReply",
    "Role",
    "Snapshot",
    "StorageError",
    "Term",
    "TimeoutNow",
    "WalLog",
]
