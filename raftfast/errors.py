"""The error hierarchy: every error raftfast raises on purpose derives from RaftError."""

from __future__ import annotations

from typing import Optional


class RaftError(Exception):
    """Base of every raftfast error."""


class NotLeaderError(RaftError):
    """This node cannot serve the request; retry at `leader` (None when unknown)."""

    def __init__(self, leader: Optional[int] = None) -> None:
        super().__init__(f"not the leader (leader is {leader})")
        self.leader = leader

    def __reduce__(self):
        return (type(self), (self.leader,))


class ConfigInProgressError(RaftError):
    """A membership change is already in flight; retry once it commits."""

    def __init__(self, message: str = "a configuration change is already in progress") -> None:
        super().__init__(message)


class StorageError(RaftError):
    """Durable storage failed or is corrupt. Fatal for the node: never retry."""

    def __init__(self, context: str, detail: str) -> None:
        super().__init__(f"{context}: {detail}")
        self.context = context
        self.detail = detail

    def __reduce__(self):
        return (type(self), (self.context, self.detail))


class EncodingError(RaftError):
    """Bytes that are not a valid encoding. Drop the message."""

    def __init__(self, context: str, detail: str) -> None:
        super().__init__(f"{context}: {detail}")
        self.context = context
        self.detail = detail

    def __reduce__(self):
        return (type(self), (self.context, self.detail))
