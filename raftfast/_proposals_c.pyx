# cython: language_level=3
"""Compiled proposal gathering: the twin of `_proposals_py`, same results and errors.

`Event.Propose` is a slots dataclass; its `command` slot is read through the member
descriptor's definition (what `event.command` ends up calling) without the attribute lookup,
which was the largest single cost of gathering a proposal.
"""

from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.object cimport PyObject

import types

from raftfast.events import Event


cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        pass
    object PyMember_GetOne(const char* obj_addr, PyMemberDef* member)


cdef extern from "Python.h":
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member


cdef object _PROPOSE = Event.Propose
_descriptor = _PROPOSE.__dict__["command"]
if type(_descriptor) is not types.MemberDescriptorType:
    raise ImportError("raftfast._proposals_c needs Event.Propose.command to be a __slots__ member")
cdef PyMemberDef* _COMMAND = (<PyMemberDescrObject*><PyObject*>_descriptor).d_member

# Returned by `take_proposals` when `events` is exhausted (None may be an event, if a bad one).
END = object()


def take_proposals(events, list proposals, Py_ssize_t max_bytes):
    """Append to `proposals` the command of each `Event.Propose` taken from `events`, up to the
    first event that is not a Propose or whose command is not bytes of at most `max_bytes`.

    Returns that event, consumed but not handled, or END when `events` ran out.
    """
    cdef object command
    for event in events:
        if type(event) is not _PROPOSE:
            return event
        # an unset slot raises AttributeError here, as event.command would
        command = PyMember_GetOne(<const char*><PyObject*>event, _COMMAND)
        if type(command) is not bytes or PyBytes_GET_SIZE(command) > max_bytes:
            return event
        proposals.append(command)
    return END
