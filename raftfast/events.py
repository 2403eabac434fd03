"""Inputs to `RaftNode.step`: the passage of time, a peer's message, a client's request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

from .messages import Message as _Message
from .types import Index, NodeId


class Event:
    """Namespace of event classes: `Event.Tick()`, `Event.Propose(b"cmd")`, ..."""

    __slots__ = ()

    @dataclass(slots=True)
    class Tick:
        pass

    @dataclass(slots=True)
    class Message:
        message: _Message

    @dataclass(slots=True)
    class Propose:
        command: bytes

    @dataclass(slots=True)
    class Snapshot:
        index: Index
        data: bytes

    @dataclass(slots=True)
    class AddServer:
        node_id: NodeId

    @dataclass(slots=True)
    class RemoveServer:
        node_id: NodeId

    @dataclass(slots=True)
    class TransferLeadership:
        target: NodeId

    @dataclass(slots=True)
    class Read:
        request_id: Hashable

    @dataclass(slots=True)
    class AddLearner:
        node_id: NodeId

    @dataclass(slots=True)
    class PromoteLearner:
        node_id: NodeId
