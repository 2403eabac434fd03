"""Pure-Python action classes (the twin of `_actions_c`): outputs of `RaftNode.step`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional, Tuple

from .messages import Message
from .types import Index, NodeId, Term


class Action:
    """Namespace of action classes: `Action.Send`, `Action.Apply`, ..."""

    __slots__ = ()

    @dataclass(slots=True)
    class Send:
        """Deliver `message` to `to`; everything it depends on is already durable."""

        to: NodeId
        message: Message

    @dataclass(slots=True)
    class Apply:
        """Apply a committed NORMAL entry; indexes strictly increase, each once."""

        index: Index
        term: Term
        command: bytes

    @dataclass(slots=True)
    class Snapshot:
        """Hint: serialise the state machine through `index`, answer with `Event.Snapshot`."""

        index: Index
        term: Term

    @dataclass(slots=True)
    class RestoreSnapshot:
        """Replace the state machine with a leader's snapshot."""

        index: Index
        term: Term
        data: bytes

    @dataclass(slots=True)
    class MembershipChanged:
        members: Tuple[NodeId, ...]
        learners: Tuple[NodeId, ...] = ()

    @dataclass(slots=True)
    class ReadReady:
        """The read may be served now: `last_applied >= index` already holds."""

        request_id: Hashable
        index: Index

    @dataclass(slots=True)
    class ReadFailed:
        """The read could not be confirmed; retry at `leader` (None when unknown)."""

        request_id: Hashable
        leader: Optional[NodeId]

    @dataclass(slots=True)
    class Rejected:
        """Beyond raft-io: `step_many` reports an event that `step` would have raised for.

        `error` is the `RaftError` (`NotLeaderError`, `ConfigInProgressError`, ...) and `event`
        the event it refused; nothing else in the batch is affected.
        """

        event: object
        error: Exception
