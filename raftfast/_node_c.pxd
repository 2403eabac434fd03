# Augments _node_py.py when setup.py compiles it as raftfast._node_c: RaftNode becomes an
# extension type with C-level attribute slots. The Python source itself is unchanged.
# The per-step methods are declared cdef (C calls, no method lookup or argument tuple);
# nothing outside the class calls them.

cimport cython

cdef class RaftNode:
    cdef object _cfg
    cdef object _id
    cdef object _log
    cdef object _append_commands
    cdef object _batch
    cdef object _durable_index
    cdef object _rng
    cdef object _min_timeout
    cdef object _max_timeout
    cdef object _term
    cdef object _voted_for
    cdef object _persisted_hs
    cdef object _commit
    cdef object _applied
    cdef object _base_config
    cdef list _config_entries
    cdef object _config
    cdef frozenset _voters
    cdef object _role
    cdef object _leader
    cdef object _election_elapsed
    cdef object _heartbeat_elapsed
    cdef object _randomized_timeout
    cdef bint _pre_vote_phase
    cdef set _granted
    cdef set _rejected
    cdef dict _progress
    cdef object _noop_index
    cdef object _transfer_target
    cdef object _transfer_elapsed
    cdef bint _timeout_now_sent
    cdef list _reads
    cdef object _read_seq
    cdef object _read_seq_sent
    cdef dict _read_acks
    cdef list _out
    cdef bint _dirty
    cdef set _needs_append
    cdef list _proposals
    cdef object _snapshot_hint
    cdef object _applied_bytes

    @cython.locals(max_bytes=Py_ssize_t, can_propose=bint, out=list, proposals=list)
    cpdef list step_many(self, events)
    cdef _dispatch(self, event)
    cdef list _finish(self)
    cdef _on_message(self, m)
    cdef _follow(self, leader)
    cdef _send(self, to, message)
    cdef _on_append_entries(self, m)
    cdef _on_append_reply(self, m)
    cdef _send_appends(self)
    cdef _send_append(self, peer, pr, bint heartbeat)
    cdef _maybe_commit(self)
    cdef _apply_committed(self, list out)
    cdef _append_local(self, entries)
    cdef bint _can_propose(self)
    cdef _flush_proposals(self)
