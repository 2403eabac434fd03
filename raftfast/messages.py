"""Messages between peers. Field names follow raft-io, with `from` spelled `from_`.

Every message has a `term` and a `sender` (the node it came from), so the node never needs the
transport to say who sent what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .types import Index, LogEntry, NodeId, Snapshot, Term

__all__ = [
    "Message",
    "PreVote",
    "PreVoteReply",
    "RequestVote",
    "RequestVoteReply",
    "AppendEntries",
    "AppendEntriesReply",
    "InstallSnapshot",
    "InstallSnapshotReply",
    "TimeoutNow",
    "ReadProbe",
    "ReadProbeReply",
    "MESSAGE_TYPES",
]


class Message:
    __slots__ = ()
    term: Term

    @property
    def sender(self) -> NodeId:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


@dataclass(slots=True)
class PreVote(Message):
    term: Term
    candidate: NodeId
    last_log_index: Index
    last_log_term: Term

    @property
    def sender(self) -> NodeId:
        return self.candidate


@dataclass(slots=True)
class PreVoteReply(Message):
    term: Term
    vote_granted: bool
    from_: NodeId

    @property
    def sender(self) -> NodeId:
        return self.from_


@dataclass(slots=True)
class RequestVote(Message):
    term: Term
    candidate: NodeId
    last_log_index: Index
    last_log_term: Term
    force: bool = False

    @property
    def sender(self) -> NodeId:
        return self.candidate


@dataclass(slots=True)
class RequestVoteReply(Message):
    term: Term
    vote_granted: bool
    from_: NodeId

    @property
    def sender(self) -> NodeId:
        return self.from_


@dataclass(slots=True)
class AppendEntries(Message):
    term: Term
    leader: NodeId
    prev_log_index: Index
    prev_log_term: Term
    entries: Sequence[LogEntry]
    leader_commit: Index

    @property
    def sender(self) -> NodeId:
        return self.leader

    def __eq__(self, other: object) -> bool:
        # `entries` may be any sequence type; compare element-wise.
        if not isinstance(other, AppendEntries):
            return NotImplemented
        return (
            self.term == other.term
            and self.leader == other.leader
            and self.prev_log_index == other.prev_log_index
            and self.prev_log_term == other.prev_log_term
            and self.leader_commit == other.leader_commit
            and list(self.entries) == list(other.entries)
        )


@dataclass(slots=True)
class AppendEntriesReply(Message):
    term: Term
    success: bool
    from_: NodeId
    match_index: Index
    conflict_index: Index = 0
    conflict_term: Term = 0

    @property
    def sender(self) -> NodeId:
        return self.from_


@dataclass(slots=True)
class InstallSnapshot(Message):
    term: Term
    leader: NodeId
    snapshot: Snapshot

    @property
    def sender(self) -> NodeId:
        return self.leader


@dataclass(slots=True)
class InstallSnapshotReply(Message):
    term: Term
    from_: NodeId
    last_index: Index

    @property
    def sender(self) -> NodeId:
        return self.from_


@dataclass(slots=True)
class TimeoutNow(Message):
    term: Term
    leader: NodeId

    @property
    def sender(self) -> NodeId:
        return self.leader


@dataclass(slots=True)
class ReadProbe(Message):
    """Leader -> voters: confirm I am still your leader (ReadIndex, thesis §6.4)."""

    term: Term
    leader: NodeId
    seq: int

    @property
    def sender(self) -> NodeId:
        return self.leader


@dataclass(slots=True)
class ReadProbeReply(Message):
    term: Term
    from_: NodeId
    seq: int

    @property
    def sender(self) -> NodeId:
        return self.from_


MESSAGE_TYPES = (
    PreVote,
    PreVoteReply,
    RequestVote,
    RequestVoteReply,
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    TimeoutNow,
    ReadProbe,
    ReadProbeReply,
)
