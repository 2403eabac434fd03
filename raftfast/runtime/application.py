"""What the runtime needs from the replicated application (the state machine and the service in
front of it). `raftfast.kv.KVService` is the one raftfast ships."""

from __future__ import annotations

from typing import Hashable, List, Optional, Protocol

from ..types import Index, NodeId, Role, Term

__all__ = ["Application"]


class Application(Protocol):
    """Also, optionally, `awaiting_input() -> bool`: whether clients it answered since the last
    `drain` are still to send their next requests. Inline over a WAL, a leader's proposals wait
    for those a moment (at most half an fsync) so that they join the coming fsync."""

    def drain(self, events: List[object]) -> None:
        """Start of a turn: append the client events queued since the last turn (proposals,
        reads) to `events`. The app asks for a turn with `RaftServer.wake()`."""

    def apply(self, index: Index, command: bytes) -> None:
        """Apply a committed command (Action.Apply)."""

    def read_ready(self, request_id: Hashable) -> None:
        """A read registered with Event.Read may be served from local state now."""

    def read_failed(self, request_id: Hashable, leader: Optional[NodeId]) -> None:
        """A read could not be confirmed: leadership was lost."""

    def rejected(self, event: object, error: Exception) -> None:
        """The node refused a client event (usually NotLeaderError)."""

    def snapshot(self) -> bytes:
        """Serialise the state machine as of the last applied command."""

    def restore(self, data: bytes) -> None:
        """Replace the state machine with a snapshot (b"" means empty)."""

    def role_changed(self, role: Role, term: Term, leader: Optional[NodeId]) -> None:
        """Role, term or known leader changed during the last turn."""

    def flush(self) -> None:
        """End of a turn: write whatever replies the turn produced."""
