# cython: annotation_typing=False
"""RaftNode: the deterministic, sans-IO Raft protocol.

This source is both the pure-Python build and, compiled by Cython with `_node_c.pxd` as its
augmenting declarations, the `_node_c` extension; `raftfast.node` picks one at import.

`step(event)` and `step_many(events)` are the only ways to change state. The node never reads a
clock, opens a socket or spawns a task; the caller carries out the returned actions in order.

Section references are to the Raft paper (Ongaro & Ousterhout 2014, "§5.x") and Ongaro's thesis
("thesis §x.y").
"""

from __future__ import annotations

import random
import sys
from typing import Dict, Iterable, List, Optional, Tuple

from ._proposals import END as _END, take_proposals as _take_proposals
from .actions import Action
from .config import RaftConfig
from .errors import ConfigInProgressError, NotLeaderError, RaftError, StorageError
from .events import Event
from .log import MemoryLog
from .messages import (
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
from .progress import Progress, ProgressState
from .quorum import VOTE_LOST, VOTE_WON, committed_index, vote_result
from .types import EntryKind, HardState, LogEntry, Membership, NodeId, Role, Snapshot

__all__ = ["RaftNode"]

_NORMAL = EntryKind.NORMAL
_CONFIG = EntryKind.CONFIG
_NOOP = EntryKind.NOOP
_FOLLOWER = Role.FOLLOWER
_CANDIDATE = Role.CANDIDATE
_LEADER = Role.LEADER
_PROBE = ProgressState.PROBE
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT

# Client events: refused ones raise from step() and become Action.Rejected in step_many().
_CLIENT_ERRORS = (RaftError, TypeError, ValueError)
# Entries handed to the application per log read while applying.
_APPLY_CHUNK = 1024


class _PendingRead:
    __slots__ = ("request_id", "index", "seq")

    def __init__(self, request_id, index: int, seq: int) -> None:
        self.request_id = request_id
        self.index = index
        self.seq = seq


class RaftNode:
    """One Raft server's protocol state. See API.md for the contract."""

    def __init__(self, config: RaftConfig, log=None) -> None:
        if not isinstance(config, RaftConfig):
            raise TypeError(f"config must be a RaftConfig, got {type(config).__name__}")
        self._cfg = config
        self._id = config.id
        self._log = MemoryLog() if log is None else log
        self._append_commands = getattr(self._log, "append_commands", None)
        self._batch = getattr(self._log, "batch", None)
        # A log whose sync() only starts the write reports what is on disk: a leader counts
        # itself toward a commit only that far (thesis §10.2.1). Without it, sync() is a full
        # barrier and the whole log counts once the step ends.
        self._durable_index = getattr(self._log, "durable_index", None)
        # The id is always mixed in: nodes given one shared seed must still draw different
        # election timeouts, or they campaign in lockstep and split every vote.
        seed = f"{config.id}" if config.seed is None else f"{config.seed}:{config.id}"
        self._rng = random.Random(seed)
        self._min_timeout, self._max_timeout = config.election_timeout

        log = self._log
        hs = log.hard_state()
        self._term = hs.term
        self._voted_for = hs.voted_for
        if log.last_term() > self._term:
            # Entries reached the disk but the hard state that went with them did not: the
            # vote that was lost was never sent (sends follow the sync), so forgetting it is safe.
            self._term = log.last_term()
            self._voted_for = None
        self._persisted_hs = hs

        snapshot = log.snapshot()
        self._commit = snapshot.index
        self._applied = snapshot.index
        if snapshot.index > 0 or config.join:
            self._base_config = snapshot.config
        else:
            self._base_config = Membership.of((config.id,) + config.peers)
        self._config_entries: List[Tuple[int, Membership]] = []
        self._load_config_entries(snapshot.index + 1, log.last_index())
        self._config = self._config_entries[-1][1] if self._config_entries else self._base_config
        self._voters = frozenset(self._config.voters)

        self._role = _FOLLOWER
        self._leader: Optional[NodeId] = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._new_timeout()
        self._pre_vote_phase = False
        self._granted: set = set()
        self._rejected: set = set()

        # leader state
        self._progress: Dict[NodeId, Progress] = {}
        self._noop_index = 0
        self._transfer_target: Optional[NodeId] = None
        self._transfer_elapsed = 0
        self._timeout_now_sent = False
        self._reads: List[_PendingRead] = []
        self._read_seq = 0
        self._read_seq_sent = 0
        self._read_acks: Dict[NodeId, int] = {}

        # per-step scratch
        self._out: List[object] = []
        self._dirty = False
        self._needs_append: set = set()
        self._proposals: List[bytes] = []
        self._snapshot_hint = log.snapshot_index()
        self._applied_bytes = 0  # command bytes applied since the snapshot hint (snapshot_bytes)

    # ---------------------------------------------------------------- raft-io spellings

    @classmethod
    def new(cls, config: RaftConfig) -> "RaftNode":
        return cls(config)

    @classmethod
    def with_log(cls, config: RaftConfig, log) -> "RaftNode":
        return cls(config, log)

    # ---------------------------------------------------------------- read-only view

    @property
    def id(self) -> NodeId:
        return self._id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader(self) -> Optional[NodeId]:
        return self._leader

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def last_applied(self) -> int:
        return self._applied

    @property
    def log(self):
        return self._log

    @property
    def config(self) -> RaftConfig:
        return self._cfg

    @property
    def voted_for(self) -> Optional[NodeId]:
        return self._voted_for

    @property
    def members(self) -> Tuple[NodeId, ...]:
        return self._config.voters

    @property
    def learners(self) -> Tuple[NodeId, ...]:
        return self._config.learners

    @property
    def membership(self) -> Membership:
        return self._config

    @property
    def transfer_target(self) -> Optional[NodeId]:
        return self._transfer_target

    def is_leader(self) -> bool:
        return self._role is _LEADER

    def progress(self, peer: NodeId) -> Optional[Progress]:
        """The leader's view of `peer` (None on a non-leader or for a non-member)."""
        return self._progress.get(peer)

    def __repr__(self) -> str:
        return (
            f"RaftNode(id={self._id}, role={self._role.name}, term={self._term}, "
            f"leader={self._leader}, commit={self._commit}, applied={self._applied}, "
            f"last={self._log.last_index()})"
        )

    # ---------------------------------------------------------------- stepping

    def step(self, event) -> List[object]:
        """Handle one event; returns the actions to carry out, in order."""
        self._dispatch(event)
        return self._finish()

    def step_many(self, events: Iterable[object]) -> List[object]:
        """Handle a batch of events with one durability barrier and coalesced sends.

        A client event the node refuses becomes `Action.Rejected(event, error)` in place; the
        rest of the batch goes on.
        """
        out = self._out
        proposals = self._proposals
        propose = Event.Propose
        # no command is longer than sys.maxsize: the clamp lets the compiled build compare in C
        max_bytes = min(self._cfg.max_entry_bytes, sys.maxsize)
        can_propose = self._can_propose()
        events = iter(events)
        while True:
            # A leader takes each run of well-formed proposals in one kernel call; the event
            # that ends the run goes through the general path below.
            event = _take_proposals(events, proposals, max_bytes) if can_propose else next(events, _END)
            if event is _END:
                break
            kind = type(event)
            if kind is propose and can_propose:
                command = event.command
                if type(command) is not bytes:
                    try:
                        command = self._check_command(command)
                    except _CLIENT_ERRORS as exc:
                        out.append(Action.Rejected(event, exc))
                        continue
                elif len(command) > max_bytes:
                    out.append(Action.Rejected(event, self._too_large(command)))
                    continue
                proposals.append(command)
                continue
            if proposals:
                self._flush_proposals()
                # the flush handed that list to the log and started a new one: collect the
                # proposals after this event there, or they are silently dropped
                proposals = self._proposals
            if kind is Event.Tick or kind is Event.Message:
                self._dispatch(event)
            else:
                try:
                    self._dispatch(event)
                except StorageError:
                    raise
                except _CLIENT_ERRORS as exc:
                    out.append(Action.Rejected(event, exc))
            can_propose = self._can_propose()
        return self._finish()

    def _dispatch(self, event) -> None:
        kind = type(event)
        if kind is Event.Message:
            self._on_message(event.message)
        elif kind is Event.Tick:
            self._on_tick()
        elif kind is Event.Propose:
            self._propose(event.command)
        elif kind is Event.Read:
            self._read(event.request_id)
        elif kind is Event.Snapshot:
            self._compact(event.index, event.data)
        elif kind is Event.AddServer:
            self._change_membership("add", event.node_id)
        elif kind is Event.RemoveServer:
            self._change_membership("remove", event.node_id)
        elif kind is Event.AddLearner:
            self._change_membership("add_learner", event.node_id)
        elif kind is Event.PromoteLearner:
            self._change_membership("promote", event.node_id)
        elif kind is Event.TransferLeadership:
            self._transfer(event.target)
        else:
            raise TypeError(f"not a raftfast event: {event!r}")

    def _finish(self) -> List[object]:
        """End of a step: send, persist, then apply. Sends and applies follow the sync."""
        if self._proposals:
            self._flush_proposals()
        if self._role is _LEADER:
            self._maybe_commit()
            if self._needs_append:
                self._send_appends()
            if self._read_seq > self._read_seq_sent:
                self._broadcast_read_probe()
        out = self._out
        hs_term, hs_vote = self._term, self._voted_for
        persisted = self._persisted_hs
        if persisted.term != hs_term or persisted.voted_for != hs_vote:
            hs = HardState(hs_term, hs_vote)
            self._log.set_hard_state(hs)
            self._persisted_hs = hs
            self._dirty = True
        if self._dirty:
            self._log.sync()
            self._dirty = False
        if self._applied < self._commit:
            self._apply_committed(out)
        if self._role is _LEADER:
            if self._reads:
                self._release_reads(out)
            if self._id not in self._voters and self._config_committed():
                # thesis §4.2.2: a leader removed from the configuration steps down once the
                # removal commits.
                self._become_follower(self._term, None)
        cfg = self._cfg
        threshold = cfg.snapshot_threshold
        bound = cfg.snapshot_bytes
        if (threshold and self._applied - self._snapshot_hint >= threshold) or (bound and self._applied_bytes >= bound):
            self._snapshot_hint = self._applied
            self._applied_bytes = 0
            out.append(Action.Snapshot(self._applied, self._log.term_at(self._applied)))
        self._out = []
        return out

    # ---------------------------------------------------------------- time

    def _on_tick(self) -> None:
        self._election_elapsed += 1
        if self._role is _LEADER:
            self._tick_leader()
        elif self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            if self._is_voter():
                self._campaign(force=False)
            else:
                # A non-voter never campaigns, but after a silent timeout its leader is no
                # longer live: forget it, or leader stickiness would refuse the votes that a
                # voter it has not yet heard it became (thesis §4.1) must give.
                self._leader = None
                self._randomized_timeout = self._new_timeout()

    def _tick_leader(self) -> None:
        if self._transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._min_timeout:
                self._abandon_transfer()
        if self._election_elapsed >= self._min_timeout:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_active():
                # thesis §9.6 check-quorum: we may be in a minority partition
                self._become_follower(self._term, None)
                return
        for pr in self._progress.values():
            if pr.state is _SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= self._max_timeout:
                    # the InstallSnapshot (or its reply) was probably lost: try again
                    pr.become_probe()
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self._cfg.heartbeat_interval:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = {self._id}
        for peer, pr in self._progress.items():
            if pr.recent_active:
                active.add(peer)
            pr.recent_active = False
        voters = self._voters
        return len(voters.intersection(active)) >= len(voters) // 2 + 1

    def _new_timeout(self) -> int:
        return self._rng.randrange(self._min_timeout, self._max_timeout)

    def _in_lease(self) -> bool:
        """Leader stickiness (thesis §4.2.3): heard from a live leader within the minimum
        election timeout."""
        return self._leader is not None and self._election_elapsed < self._min_timeout

    # ---------------------------------------------------------------- elections (§5.2)

    def _is_voter(self) -> bool:
        return self._id in self._voters

    def _campaign(self, force: bool) -> None:
        log = self._log
        if self._cfg.pre_vote and not force:
            # thesis §9.6: ask first whether we could win, without touching any term
            self._role = _CANDIDATE
            self._leader = None
            self._pre_vote_phase = True
            self._reset_votes()
            self._randomized_timeout = self._new_timeout()
            msg_term = self._term + 1
            message = PreVote(msg_term, self._id, log.last_index(), log.last_term())
            if self._tally() == VOTE_WON:
                self._start_election(force)
                return
        else:
            self._start_election(force)
            return
        out = self._out
        for peer in sorted(self._voters):
            if peer != self._id:
                out.append(Action.Send(peer, message))

    def _start_election(self, force: bool) -> None:
        log = self._log
        self._role = _CANDIDATE
        self._pre_vote_phase = False
        self._term += 1
        self._voted_for = self._id
        self._leader = None
        self._election_elapsed = 0
        self._randomized_timeout = self._new_timeout()
        self._reset_votes()
        if self._tally() == VOTE_WON:
            self._become_leader()
            return
        message = RequestVote(self._term, self._id, log.last_index(), log.last_term(), force)
        out = self._out
        for peer in sorted(self._voters):
            if peer != self._id:
                out.append(Action.Send(peer, message))

    def _reset_votes(self) -> None:
        self._granted = {self._id}
        self._rejected = set()

    def _tally(self) -> int:
        return vote_result(self._voters, self._granted, self._rejected)

    def _log_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: the candidate's log is at least as up-to-date as ours."""
        my_term = self._log.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self._log.last_index())

    def _on_pre_vote(self, m: PreVote) -> None:
        # Not conditioned on being a voter in our own configuration: see _on_request_vote.
        granted = (
            m.term > self._term
            and not self._in_lease()
            and self._log_up_to_date(m.last_log_index, m.last_log_term)
        )
        # A granted pre-vote answers in the term asked about; a refusal tells our own term.
        self._send(m.candidate, PreVoteReply(m.term if granted else self._term, granted, self._id))

    def _on_request_vote(self, m: RequestVote) -> None:
        # m.term == self._term here. A learner or a joining server votes too (candidates only
        # ask, and only count, the voters of their own configuration): a configuration that
        # makes it a voter can commit without reaching its log, and then the cluster may need
        # its vote to elect anyone (thesis §4.1: servers answer RPCs without consulting their
        # own configuration; etcd's raft lets learners vote for this reason).
        granted = (
            (self._voted_for is None or self._voted_for == m.candidate)
            and self._log_up_to_date(m.last_log_index, m.last_log_term)
        )
        if granted:
            self._voted_for = m.candidate
            self._election_elapsed = 0
        self._send(m.candidate, RequestVoteReply(self._term, granted, self._id))

    def _on_vote_reply(self, sender: NodeId, granted: bool) -> None:
        if granted:
            self._granted.add(sender)
        else:
            self._rejected.add(sender)
        result = self._tally()
        if result == VOTE_WON:
            if self._pre_vote_phase:
                self._start_election(force=False)
            else:
                self._become_leader()
        elif result == VOTE_LOST:
            self._become_follower(self._term, None)

    # ---------------------------------------------------------------- role changes

    def _become_follower(self, term: int, leader: Optional[NodeId]) -> None:
        self._fail_reads(leader)
        if term != self._term:
            self._term = term
            self._voted_for = None
        self._role = _FOLLOWER
        self._leader = leader
        self._pre_vote_phase = False
        self._election_elapsed = 0
        self._randomized_timeout = self._new_timeout()
        self._progress = {}
        self._needs_append = set()
        self._transfer_target = None
        self._read_acks = {}

    def _become_leader(self) -> None:
        log = self._log
        self._role = _LEADER
        self._leader = self._id
        self._pre_vote_phase = False
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._transfer_target = None
        self._reads = []
        self._read_acks = {}
        self._read_seq = self._read_seq_sent = 0
        next_index = log.last_index() + 1
        self._progress = {peer: Progress(next_index) for peer in self._peers()}
        for pr in self._progress.values():
            pr.recent_active = True
        # §5.4.2 / §8: commit an entry of our own term so earlier entries commit and reads
        # can be served.
        self._noop_index = next_index
        self._append_local([LogEntry(self._term, next_index, _NOOP, b"")])
        self._needs_append.update(self._progress)

    def _peers(self) -> List[NodeId]:
        config = self._config
        return sorted(p for p in config.voters + config.learners if p != self._id)

    # ---------------------------------------------------------------- messages

    def _on_message(self, m: Message) -> None:
        if not isinstance(m, Message):
            raise TypeError(f"not a raftfast message: {m!r}")
        term = m.term
        mtype = type(m)
        if term > self._term:
            if mtype is RequestVote or mtype is PreVote:
                force = mtype is RequestVote and m.force
                if not force and self._in_lease():
                    # leader stickiness: a live leader exists; refuse without a term change
                    if mtype is PreVote:
                        self._send(m.candidate, PreVoteReply(self._term, False, self._id))
                    return
            if mtype is PreVote:
                self._on_pre_vote(m)
                return
            if mtype is PreVoteReply and m.vote_granted:
                pass  # a granted pre-vote carries the future term; it is no reason to move
            elif mtype is AppendEntries or mtype is InstallSnapshot or mtype is ReadProbe:
                self._become_follower(term, m.sender)
            else:
                self._become_follower(term, None)
        elif term < self._term:
            self._on_stale(m)
            return

        if mtype is AppendEntries:
            self._on_append_entries(m)
        elif mtype is AppendEntriesReply:
            if self._role is _LEADER:
                self._on_append_reply(m)
        elif mtype is RequestVote:
            self._on_request_vote(m)
        elif mtype is PreVote:
            self._on_pre_vote(m)
        elif mtype is RequestVoteReply:
            if self._role is _CANDIDATE and not self._pre_vote_phase:
                self._on_vote_reply(m.from_, m.vote_granted)
        elif mtype is PreVoteReply:
            if self._role is _CANDIDATE and self._pre_vote_phase:
                self._on_vote_reply(m.from_, m.vote_granted)
        elif mtype is ReadProbe:
            self._on_read_probe(m)
        elif mtype is ReadProbeReply:
            if self._role is _LEADER:
                self._on_read_probe_reply(m)
        elif mtype is InstallSnapshot:
            self._on_install_snapshot(m)
        elif mtype is InstallSnapshotReply:
            if self._role is _LEADER:
                self._on_install_snapshot_reply(m)
        elif mtype is TimeoutNow:
            self._on_timeout_now(m)

    def _on_stale(self, m: Message) -> None:
        """§5.1: a message from an older term. Tell a stale leader or candidate our term so
        it steps down; ignore stale replies."""
        mtype = type(m)
        if mtype is AppendEntries or mtype is InstallSnapshot or mtype is ReadProbe:
            self._send(m.sender, AppendEntriesReply(self._term, False, self._id, 0))
        elif mtype is PreVote:
            self._send(m.candidate, PreVoteReply(self._term, False, self._id))
        elif mtype is RequestVote:
            self._send(m.candidate, RequestVoteReply(self._term, False, self._id))

    def _follow(self, leader: NodeId) -> None:
        """A message from the current term's leader: it is alive, so stay a follower."""
        if self._role is not _FOLLOWER:
            self._become_follower(self._term, leader)
        self._leader = leader
        self._election_elapsed = 0

    def _send(self, to: NodeId, message: Message) -> None:
        self._out.append(Action.Send(to, message))

    # ---------------------------------------------------------------- replication (§5.3)

    def _on_append_entries(self, m: AppendEntries) -> None:
        self._follow(m.leader)
        log = self._log
        prev = m.prev_log_index
        if prev < self._commit:
            # everything through our commit index already matches the leader (§5.4)
            self._send(m.leader, AppendEntriesReply(self._term, True, self._id, self._commit))
            return
        prev_term = log.term_at(prev)
        if prev_term != m.prev_log_term:
            hint_index = min(prev, log.last_index())
            hint_index, hint_term = self._find_conflict_by_term(hint_index, m.prev_log_term)
            self._send(
                m.leader,
                AppendEntriesReply(self._term, False, self._id, prev, hint_index, hint_term),
            )
            return
        entries = m.entries
        count = len(entries)
        last_new = prev + count
        if count:
            last = log.last_index()
            if prev == last:
                self._append_local(entries)
            else:
                self._merge_entries(entries, prev, last)
        if m.leader_commit > self._commit:
            commit = min(m.leader_commit, last_new)
            if commit > self._commit:
                self._commit = commit
        self._send(m.leader, AppendEntriesReply(self._term, True, self._id, last_new))

    def _merge_entries(self, entries, prev: int, last: int) -> None:
        """§5.3: skip entries we already hold, truncate at the first conflict, append the rest."""
        log = self._log
        term_at = log.term_at
        i = 0
        count = len(entries)
        while i < count:
            entry = entries[i]
            index = prev + 1 + i
            if index > last:
                break
            if term_at(index) != entry.term:
                if index <= self._commit:
                    raise RaftError(
                        f"node {self._id}: leader asked to overwrite committed entry {index}"
                    )
                self._truncate_local(index)
                break
            i += 1
        if i < count:
            self._append_local(entries[i:] if i else entries)

    def _find_conflict_by_term(self, index: int, term: int) -> Tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, with that term (etcd's
        findConflictByTerm): lets a leader skip a whole term of mismatches per round trip."""
        log = self._log
        floor = log.snapshot_index()
        while index > floor:
            t = log.term_at(index)
            if t is None or t <= term:
                return index, (t or 0)
            index -= 1
        return index, (log.term_at(index) or 0)

    def _on_append_reply(self, m: AppendEntriesReply) -> None:
        pr = self._progress.get(m.from_)
        if pr is None:
            return
        pr.recent_active = True
        if not m.success:
            hint = m.conflict_index
            if m.conflict_term > 0:
                hint, _ = self._find_conflict_by_term(m.conflict_index, m.conflict_term)
            if pr.maybe_decrease(m.match_index, hint):
                if pr.state is _REPLICATE:
                    pr.become_probe()
                self._needs_append.add(m.from_)
            return
        if pr.maybe_update(m.match_index) or (
            pr.match == m.match_index and pr.state is _PROBE
        ):
            if pr.state is _PROBE:
                pr.become_replicate()
            elif pr.state is _SNAPSHOT and pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
        elif pr.state is _PROBE:
            pr.probe_sent = False
        if pr.next <= self._log.last_index():
            self._needs_append.add(m.from_)
        if m.from_ == self._transfer_target:
            self._maybe_send_timeout_now()

    def _send_appends(self) -> None:
        needs = self._needs_append
        self._needs_append = set()
        progress = self._progress
        for peer in sorted(needs):
            pr = progress.get(peer)
            if pr is not None:
                self._send_append(peer, pr, False)

    def _broadcast_heartbeat(self) -> None:
        for peer in sorted(self._progress):
            self._send_append(peer, self._progress[peer], True)
        self._needs_append.clear()
        if self._reads:
            # a lost probe must not stall pending reads: ask again with the same sequence
            self._broadcast_read_probe()

    def _send_append(self, peer: NodeId, pr: Progress, heartbeat: bool) -> None:
        """Send `peer` what it is missing: as many AppendEntries as the pipeline allows, an
        empty one as a heartbeat, or the snapshot when it needs compacted entries."""
        log = self._log
        cfg = self._cfg
        out = self._out
        last = log.last_index()
        while True:
            state = pr.state
            if state is _SNAPSHOT:
                return
            if not heartbeat:
                if state is _PROBE:
                    if pr.probe_sent:
                        return
                elif len(pr.inflight) >= cfg.max_inflight:
                    return
                if pr.next > last:
                    return
            prev = pr.next - 1
            prev_term = log.term_at(prev)
            if prev_term is None:
                self._send_snapshot(peer, pr)
                return
            if pr.next <= last and (not heartbeat or state is _PROBE or len(pr.inflight) < cfg.max_inflight):
                if self._batch is not None:
                    entries = self._batch(pr.next, cfg.max_batch, cfg.max_batch_bytes)
                else:
                    entries = log.entries(pr.next, min(last, pr.next + cfg.max_batch - 1))
            else:
                entries = []
            out.append(
                Action.Send(peer, AppendEntries(self._term, self._id, prev, prev_term, entries, self._commit))
            )
            heartbeat = False
            if entries:
                if state is _REPLICATE:
                    # the entries start at pr.next; indexing a compact batch would build a LogEntry
                    pr.next += len(entries)
                    pr.inflight.append(pr.next - 1)
                    continue
            if state is _PROBE:
                pr.probe_sent = True
            return

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> None:
        snapshot = self._log.snapshot()
        pr.become_snapshot(snapshot.index)
        self._send(peer, InstallSnapshot(self._term, self._id, snapshot))

    def _maybe_commit(self) -> None:
        """§5.3, §5.4.2: commit the highest index a majority holds, if it is from our term."""
        voters = self._voters
        progress = self._progress
        own = self._log.last_index() if self._durable_index is None else self._durable_index()
        matches = [own if v == self._id else progress[v].match for v in voters if v == self._id or v in progress]
        if len(matches) < len(voters):
            return
        index = committed_index(matches)
        if index > self._commit and self._log.term_at(index) == self._term:
            self._commit = index

    def _config_committed(self) -> bool:
        return not self._config_entries or self._config_entries[-1][0] <= self._commit

    def _apply_committed(self, out: List[object]) -> None:
        log = self._log
        applied = self._applied
        commit = self._commit
        apply = Action.Apply
        collect = getattr(log, "collect_applies", None)
        first = len(out)
        while applied < commit:
            hi = min(commit, applied + _APPLY_CHUNK)
            if collect is not None:
                collect(applied + 1, hi, out, apply)
            else:
                for entry in log.entries(applied + 1, hi):
                    if entry.kind is _NORMAL:
                        out.append(apply(entry.index, entry.term, entry.command))
            applied = hi
        self._applied = applied
        if self._cfg.snapshot_bytes:
            self._applied_bytes += sum([len(action.command) for action in out[first:] if type(action) is apply])

    # ---------------------------------------------------------------- local log writes

    def _append_local(self, entries) -> None:
        self._log.append(entries)
        self._dirty = True
        kinds = getattr(entries, "kinds", None)
        if kinds is not None and _CONFIG not in kinds:
            return  # a compact batch says without building entries that none is a config
        for entry in entries:
            if entry.kind is _CONFIG:
                self._push_config(entry.index, Membership.decode(entry.command))

    def _truncate_local(self, from_index: int) -> None:
        self._log.truncate(from_index)
        self._dirty = True
        if self._config_entries and self._config_entries[-1][0] >= from_index:
            # a truncated configuration entry reverts to the one before it (thesis §4.1)
            while self._config_entries and self._config_entries[-1][0] >= from_index:
                self._config_entries.pop()
            self._set_config(self._config_entries[-1][1] if self._config_entries else self._base_config)

    def _load_config_entries(self, lo: int, hi: int) -> None:
        log = self._log
        while lo <= hi:
            chunk_hi = min(hi, lo + 4095)
            for entry in log.entries(lo, chunk_hi):
                if entry.kind == _CONFIG:
                    self._config_entries.append((entry.index, Membership.decode(entry.command)))
            lo = chunk_hi + 1

    def _push_config(self, index: int, membership: Membership) -> None:
        self._config_entries.append((index, membership))
        self._set_config(membership)

    def _set_config(self, membership: Membership) -> None:
        if membership == self._config:
            return
        self._config = membership
        self._voters = frozenset(membership.voters)
        self._out.append(Action.MembershipChanged(membership.voters, membership.learners))
        if self._role is _LEADER:
            progress = self._progress
            wanted = set(self._peers())
            # probe a new member with the entry just appended (the one that adds it): starting
            # above it would leave nothing to send until the next heartbeat
            next_index = self._log.last_index()
            for peer in sorted(wanted - progress.keys()):
                pr = Progress(next_index)
                pr.recent_active = True
                progress[peer] = pr
                self._needs_append.add(peer)
            for peer in list(progress):
                if peer not in wanted:
                    del progress[peer]
                    self._read_acks.pop(peer, None)
            if self._transfer_target is not None and self._transfer_target not in self._voters:
                self._abandon_transfer()
        elif self._role is _CANDIDATE and self._id not in self._voters:
            self._become_follower(self._term, None)

    def _config_at(self, index: int) -> Membership:
        config = self._base_config
        for entry_index, membership in self._config_entries:
            if entry_index > index:
                break
            config = membership
        return config

    # ---------------------------------------------------------------- client requests

    def _can_propose(self) -> bool:
        return self._role is _LEADER and self._transfer_target is None

    def _require_leader(self) -> None:
        if self._role is not _LEADER:
            raise NotLeaderError(self._leader)
        if self._transfer_target is not None:
            # thesis §3.10: stop taking requests while leadership moves
            raise NotLeaderError(self._transfer_target)

    def _check_command(self, command) -> bytes:
        if not isinstance(command, (bytes, bytearray, memoryview)):
            raise TypeError(f"a proposal's command must be bytes, got {type(command).__name__}")
        command = bytes(command)
        if len(command) > self._cfg.max_entry_bytes:
            raise self._too_large(command)
        return command

    def _too_large(self, command: bytes) -> RaftError:
        return RaftError(
            f"proposal of {len(command)} bytes exceeds max_entry_bytes ({self._cfg.max_entry_bytes})"
        )

    def _propose(self, command) -> None:
        self._require_leader()
        self._proposals.append(self._check_command(command))

    def _flush_proposals(self) -> None:
        commands = self._proposals
        self._proposals = []
        log = self._log
        if self._append_commands is not None:
            self._append_commands(self._term, 0, commands)
        else:
            first = log.last_index() + 1
            term = self._term
            log.append([LogEntry(term, first + i, _NORMAL, c) for i, c in enumerate(commands)])
        self._dirty = True
        self._needs_append.update(self._progress)

    def _change_membership(self, op: str, node_id: NodeId) -> None:
        self._require_leader()
        if not isinstance(node_id, int) or isinstance(node_id, bool) or node_id < 1:
            raise ValueError(f"node_id must be a positive int, got {node_id!r}")
        config = self._config
        voters, learners = set(config.voters), set(config.learners)
        if op == "add":
            if node_id in voters:
                return
            learners.discard(node_id)
            voters.add(node_id)
        elif op == "remove":
            if node_id not in voters and node_id not in learners:
                return
            if node_id in voters and len(voters) == 1:
                raise RaftError(f"cannot remove node {node_id}: it is the last voter")
            voters.discard(node_id)
            learners.discard(node_id)
        elif op == "add_learner":
            if node_id in voters or node_id in learners:
                return
            learners.add(node_id)
        else:  # promote
            if node_id in voters:
                return
            if node_id not in learners:
                raise RaftError(f"cannot promote node {node_id}: it is not a learner")
            if self._progress[node_id].match < self._commit:
                raise RaftError(f"cannot promote node {node_id}: it has not caught up yet")
            learners.discard(node_id)
            voters.add(node_id)
        if not self._config_committed() or self._commit < self._noop_index:
            # one change at a time, and only after our own term's first entry commits: the
            # fix to single-server changes in Ongaro's raft-dev post of 2015
            raise ConfigInProgressError()
        index = self._log.last_index() + 1
        membership = Membership.of(voters, learners)
        self._append_local([LogEntry(self._term, index, _CONFIG, membership.encode())])
        self._needs_append.update(self._progress)

    def _transfer(self, target: NodeId) -> None:
        """thesis §3.10: bring `target` up to date, then tell it to campaign at once."""
        if self._role is not _LEADER or target == self._id or target not in self._voters:
            return
        if self._transfer_target == target:
            return
        self._transfer_target = target
        self._transfer_elapsed = 0
        self._timeout_now_sent = False
        self._maybe_send_timeout_now()
        if not self._timeout_now_sent:
            self._needs_append.add(target)

    def _maybe_send_timeout_now(self) -> None:
        pr = self._progress.get(self._transfer_target)
        if pr is not None and not self._timeout_now_sent and pr.match == self._log.last_index():
            self._timeout_now_sent = True
            self._send(self._transfer_target, TimeoutNow(self._term, self._id))

    def _abandon_transfer(self) -> None:
        self._transfer_target = None
        self._timeout_now_sent = False

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self._role is _LEADER or not self._is_voter():
            return
        self._leader = m.leader
        self._campaign(force=True)

    # ---------------------------------------------------------------- reads (thesis §6.4)

    def _read(self, request_id) -> None:
        if self._role is not _LEADER:
            raise NotLeaderError(self._leader)
        # A new leader does not know the commit index until its no-op commits: reads wait
        # for at least that (thesis §6.4 step 1).
        index = max(self._commit, self._noop_index)
        if len(self._voters) == 1 and self._id in self._voters:
            seq = self._read_seq
        else:
            if self._read_seq == self._read_seq_sent:
                self._read_seq += 1
            seq = self._read_seq
        self._reads.append(_PendingRead(request_id, index, seq))

    def _broadcast_read_probe(self) -> None:
        self._read_seq_sent = self._read_seq
        message = ReadProbe(self._term, self._id, self._read_seq)
        for peer in sorted(self._voters):
            if peer != self._id:
                self._send(peer, message)

    def _on_read_probe(self, m: ReadProbe) -> None:
        self._follow(m.leader)
        self._send(m.leader, ReadProbeReply(self._term, self._id, m.seq))

    def _on_read_probe_reply(self, m: ReadProbeReply) -> None:
        pr = self._progress.get(m.from_)
        if pr is None:
            return
        pr.recent_active = True
        if m.seq > self._read_acks.get(m.from_, 0):
            self._read_acks[m.from_] = m.seq

    def _release_reads(self, out: List[object]) -> None:
        acks = self._read_acks
        seqs = [self._read_seq if v == self._id else acks.get(v, 0) for v in self._voters]
        confirmed = committed_index(seqs)
        applied = self._applied
        reads = self._reads
        released = 0
        for read in reads:
            if read.seq > confirmed or read.index > applied:
                break
            out.append(Action.ReadReady(read.request_id, read.index))
            released += 1
        if released:
            del reads[:released]

    def _fail_reads(self, leader: Optional[NodeId] = None) -> None:
        if self._reads:
            out = self._out
            for read in self._reads:
                out.append(Action.ReadFailed(read.request_id, leader))
            self._reads = []

    # ---------------------------------------------------------------- snapshots (§7)

    def _compact(self, index: int, data: bytes) -> None:
        """The application's snapshot through `index`: compact the log there."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"snapshot data must be bytes, got {type(data).__name__}")
        log = self._log
        if not isinstance(index, int) or index > self._applied or index <= log.snapshot_index():
            return
        term = log.term_at(index)
        snapshot = Snapshot(index, term, self._config_at(index), bytes(data))
        log.apply_snapshot(snapshot)
        self._dirty = True
        self._base_config = snapshot.config
        self._config_entries = [(i, c) for i, c in self._config_entries if i > index]
        if self._snapshot_hint < index:
            self._snapshot_hint = index
            self._applied_bytes = 0  # the application's own snapshot: count afresh from here

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        self._follow(m.leader)
        snapshot = m.snapshot
        log = self._log
        if snapshot.index <= self._commit:
            self._send(m.leader, InstallSnapshotReply(self._term, self._id, self._commit))
            return
        if log.term_at(snapshot.index) == snapshot.term:
            # we already hold the snapshot's last entry: everything through it is committed
            self._commit = snapshot.index
            self._send(m.leader, InstallSnapshotReply(self._term, self._id, snapshot.index))
            return
        log.apply_snapshot(snapshot)
        self._dirty = True
        self._commit = self._applied = snapshot.index
        if self._snapshot_hint < snapshot.index:
            self._snapshot_hint = snapshot.index
        self._applied_bytes = 0
        self._out.append(Action.RestoreSnapshot(snapshot.index, snapshot.term, snapshot.data))
        self._base_config = snapshot.config
        self._config_entries = []
        self._load_config_entries(snapshot.index + 1, log.last_index())
        self._set_config(self._config_entries[-1][1] if self._config_entries else snapshot.config)
        self._send(m.leader, InstallSnapshotReply(self._term, self._id, snapshot.index))

    def _on_install_snapshot_reply(self, m: InstallSnapshotReply) -> None:
        pr = self._progress.get(m.from_)
        if pr is None:
            return
        pr.recent_active = True
        if pr.state is _SNAPSHOT:
            pr.maybe_update(m.last_index)
            pr.become_probe()
            self._needs_append.add(m.from_)
        elif pr.maybe_update(m.last_index):
            self._needs_append.add(m.from_)
