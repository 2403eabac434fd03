"""Wire-format constants shared by the codec twins (see docs/wire-format.md).

The type codes are spelled out rather than derived from `MESSAGE_TYPES`, so reordering that
tuple cannot silently change the bytes on the wire.
"""

from __future__ import annotations

from typing import Dict, Type

from ..messages import (
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

VERSION = 1
"""The first byte of every encoded message."""

MAX_VALUE = (1 << 63) - 1
"""Largest term, index, node id or sequence number: everything downstream stores them as int64."""

MAX_FRAME = 64 << 20
"""Default bound on one frame's payload (64 MiB); a longer length prefix is treated as garbage."""

MIN_FRAME = 2
"""A payload holds at least the version and type bytes."""

MESSAGE_CODES: Dict[Type[Message], int] = {
    PreVote: 1,
    PreVoteReply: 2,
    RequestVote: 3,
    RequestVoteReply: 4,
    AppendEntries: 5,
    AppendEntriesReply: 6,
    InstallSnapshot: 7,
    InstallSnapshotReply: 8,
    TimeoutNow: 9,
    ReadProbe: 10,
    ReadProbeReply: 11,
}
