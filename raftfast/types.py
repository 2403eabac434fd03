"""Plain values shared by every layer: ids, roles, entries, hard state, snapshots."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Optional, Tuple

NodeId = int
Term = int
Index = int


class Role(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONFIG = 1
    NOOP = 2


@dataclass(slots=True)
class LogEntry:
    term: Term
    index: Index
    kind: EntryKind = EntryKind.NORMAL
    command: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    term: Term = 0
    voted_for: Optional[NodeId] = None


_U32 = struct.Struct("<I")
_MAX_MEMBERS = 1 << 16


@dataclass(frozen=True, slots=True)
class Membership:
    """A configuration: the voters and the learners, each a sorted tuple of node ids.

    It is what a CONFIG entry carries and what a snapshot records.
    """

    voters: Tuple[NodeId, ...] = ()
    learners: Tuple[NodeId, ...] = ()

    @classmethod
    def of(cls, voters=(), learners=()) -> "Membership":
        return cls(tuple(sorted(set(voters))), tuple(sorted(set(learners) - set(voters))))

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.voters or node_id in self.learners

    def encode(self) -> bytes:
        ids = self.voters + self.learners
        return struct.pack(f"<II{len(ids)}Q", len(self.voters), len(self.learners), *ids)

    @classmethod
    def decode(cls, data: bytes) -> "Membership":
        """Parse `encode()` output; raises ValueError on anything else."""
        data = bytes(data)
        if len(data) < 8:
            raise ValueError("membership: truncated header")
        nv, nl = struct.unpack_from("<II", data)
        if nv > _MAX_MEMBERS or nl > _MAX_MEMBERS or len(data) != 8 + 8 * (nv + nl):
            raise ValueError("membership: length does not match member counts")
        ids = struct.unpack_from(f"<{nv + nl}Q", data, 8)
        return cls.of(ids[:nv], ids[nv:])


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine through `index` (whose term is `term`) and the configuration there."""

    index: Index
    term: Term
    config: Membership
    data: bytes = b""


EMPTY_SNAPSHOT = Snapshot(0, 0, Membership(), b"")
