# cython: language_level=3
"""Compiled action classes (the twin of `_actions_py`): outputs of `RaftNode.step`.

Extension-type dataclasses: the same fields, defaults, equality (and so no hash) as the pure
twin, and the same repr, but built in C, since the node makes one `Apply` per committed entry.
"""

cimport cython
from libc.stdint cimport int64_t


@cython.freelist(64)
@cython.dataclasses.dataclass(repr=False)
cdef class Send:
    """Deliver `message` to `to`; everything it depends on is already durable."""

    to: object
    message: object

    def __repr__(self):
        return f"Action.Send(to={self.to!r}, message={self.message!r})"


# Index and term are stored as C integers: one Python int fewer to allocate and free per
# committed entry (it is made when the field is read). Not GC-tracked: the node's command is
# bytes, which cannot form a reference cycle (CPython untracks tuples of atomic values for the
# same reason); tracking cost ~8% of a single node's propose->apply path. An Apply a caller
# builds around a container that refers back to it would leak that cycle, not be collected.
@cython.no_gc
@cython.freelist(1024)
@cython.dataclasses.dataclass(repr=False)
cdef class Apply:
    """Apply a committed NORMAL entry; indexes strictly increase, each once."""

    index: int64_t
    term: int64_t
    command: object

    def __repr__(self):
        return f"Action.Apply(index={self.index!r}, term={self.term!r}, command={self.command!r})"


@cython.dataclasses.dataclass(repr=False)
cdef class Snapshot:
    """Hint: serialise the state machine through `index`, answer with `Event.Snapshot`."""

    index: object
    term: object

    def __repr__(self):
        return f"Action.Snapshot(index={self.index!r}, term={self.term!r})"


@cython.dataclasses.dataclass(repr=False)
cdef class RestoreSnapshot:
    """Replace the state machine with a leader's snapshot."""

    index: object
    term: object
    data: object

    def __repr__(self):
        return f"Action.RestoreSnapshot(index={self.index!r}, term={self.term!r}, data={self.data!r})"


@cython.dataclasses.dataclass(repr=False)
cdef class MembershipChanged:
    members: object
    learners: object = ()

    def __repr__(self):
        return f"Action.MembershipChanged(members={self.members!r}, learners={self.learners!r})"


@cython.dataclasses.dataclass(repr=False)
cdef class ReadReady:
    """The read may be served now: `last_applied >= index` already holds."""

    request_id: object
    index: object

    def __repr__(self):
        return f"Action.ReadReady(request_id={self.request_id!r}, index={self.index!r})"


@cython.dataclasses.dataclass(repr=False)
cdef class ReadFailed:
    """The read could not be confirmed; retry at `leader` (None when unknown)."""

    request_id: object
    leader: object

    def __repr__(self):
        return f"Action.ReadFailed(request_id={self.request_id!r}, leader={self.leader!r})"


@cython.dataclasses.dataclass(repr=False)
cdef class Rejected:
    """Beyond raft-io: `step_many` reports an event that `step` would have raised for."""

    event: object
    error: object

    def __repr__(self):
        return f"Action.Rejected(event={self.event!r}, error={self.error!r})"


class Action:
    """Namespace of action classes: `Action.Send`, `Action.Apply`, ..."""

    __slots__ = ()
    Send = Send
    Apply = Apply
    Snapshot = Snapshot
    RestoreSnapshot = RestoreSnapshot
    MembershipChanged = MembershipChanged
    ReadReady = ReadReady
    ReadFailed = ReadFailed
    Rejected = Rejected
