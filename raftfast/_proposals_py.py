"""Pure-Python proposal gathering (the twin of `_proposals_c`): the leader's per-entry loop in
`RaftNode.step_many`."""

from __future__ import annotations

from typing import Iterator, List

from .events import Event

_PROPOSE = Event.Propose

# Returned by `take_proposals` when `events` is exhausted (None may be an event, if a bad one).
END = object()


def take_proposals(events: Iterator[object], proposals: List[bytes], max_bytes: int) -> object:
    """Append to `proposals` the command of each `Event.Propose` taken from `events`, up to the
    first event that is not a Propose or whose command is not bytes of at most `max_bytes`.

    Returns that event, consumed but not handled, or END when `events` ran out.
    """
    for event in events:
        if type(event) is not _PROPOSE:
            return event
        command = event.command
        if type(command) is not bytes or len(command) > max_bytes:
            return event
        proposals.append(command)
    return END
