"""RaftNode's API contract: step/step_many semantics, the durability barrier, recovery from a
log, determinism, and the read-only view."""

from __future__ import annotations

import pytest

from raftfast import (
    Action,
    AppendEntries,
    AppendEntriesReply,
    ConfigInProgressError,
    EntryKind,
    Event,
    HardState,
    LogEntry,
    Membership,
    MemoryLog,
    NotLeaderError,
    RaftConfig,
    RaftError,
    RaftNode,
    RequestVote,
    Role,
    Snapshot,
    framing,
)
from raftharness import Network, entry, make_leader, node_alone, of_type, send_pairs, sends


def msg(m):
    return Event.Message(m)


class CountingLog:
    """A MemoryLog that counts syncs and remembers whether any write is not yet synced."""

    def __init__(self, inner=None):
        self.inner = inner or MemoryLog()
        self.syncs = 0
        self.unsynced = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    # writes
    def append(self, entries):
        self.unsynced = True
        self.inner.append(entries)

    def append_commands(self, term, kind, commands):
        self.unsynced = True
        return self.inner.append_commands(term, kind, commands)

    def truncate(self, from_index):
        self.unsynced = True
        self.inner.truncate(from_index)

    def set_hard_state(self, hs):
        self.unsynced = True
        self.inner.set_hard_state(hs)

    def apply_snapshot(self, snapshot):
        self.unsynced = True
        self.inner.apply_snapshot(snapshot)

    def sync(self):
        self.syncs += 1
        self.unsynced = False
        self.inner.sync()


class BarrierNetwork(Network):
    """Checks after every step that nothing the node wrote is left unsynced when it returns
    actions (so every Send it returns depends only on durable state)."""

    def step(self, node_id, event):
        actions = super().step(node_id, event)
        assert not self.logs[node_id].unsynced, f"node {node_id} returned with unsynced writes"
        return actions

    def step_many(self, node_id, events):
        actions = super().step_many(node_id, events)
        assert not self.logs[node_id].unsynced
        return actions


def steady_leader(size=3, **kwargs):
    """Node 1 of {1..size} on a CountingLog, leader, with every peer in steady replication."""
    log = CountingLog()
    node = RaftNode(RaftConfig(1, range(1, size + 1), **kwargs), log)
    make_leader(node, list(range(2, size // 2 + 2)))
    node.step_many([msg(AppendEntriesReply(node.term, True, p, node.log.last_index())) for p in range(2, size + 1)])
    return node, log


# ---------------------------------------------------------------- durability barrier


def test_step_many_syncs_once_per_batch():
    """API: step_many steps a batch with a single durability barrier; stepping the same events
    one at a time syncs once per step that wrote something."""
    node, log = steady_leader()
    before = log.syncs
    node.step_many([Event.Propose(b"%d" % i) for i in range(20)])
    assert log.syncs == before + 1
    before = log.syncs
    last = node.log.last_index()
    mixed = [Event.Propose(b"a"), msg(AppendEntriesReply(node.term, True, 2, last)), Event.Tick(), Event.Propose(b"b"), Event.Read("r"), Event.Propose(b"c")]
    node.step_many(mixed)
    assert log.syncs == before + 1
    before = log.syncs
    for i in range(5):
        node.step(Event.Propose(b"one %d" % i))
    assert log.syncs == before + 5


def test_steps_that_write_nothing_do_not_sync():
    """API: sync is the barrier for writes; a step with nothing to persist costs nothing."""
    node, log = steady_leader()
    before = log.syncs
    node.step(Event.Tick())
    node.step_many([Event.Tick(), Event.Tick()])
    assert log.syncs == before


def test_sends_follow_the_sync_in_every_scenario():
    """Figure 2 "persistent state ... updated on stable storage before responding to RPCs":
    across elections, replication, truncation, snapshots and membership changes, no step returns
    while a write is unsynced."""
    ids = [1, 2, 3, 4]
    net = BarrierNetwork(ids, logs={i: CountingLog() for i in ids}, snapshot_threshold=4)
    net.elect(1)
    net.isolate(4)
    for i in range(10):
        net.propose(1, b"%d" % i)
    net.deliver_all()
    net.step(1, Event.Snapshot(net[1].last_applied, b"snap"))
    net.heal()
    net.heartbeat(1)
    net.heartbeat(1)
    net.step(1, Event.RemoveServer(4))
    net.deliver_all()
    net.isolate(1)
    net.propose(1, b"lost")
    net.step_many(1, [Event.Propose(b"lost too")] * 3)
    net.deliver_all()  # lost for good
    net.heal()
    net.elect(2, force=True)
    net.tick_all(10)
    assert net[1].leader == 2
    assert net[1].log.last_index() == net[2].log.last_index()  # 1's extra entries truncated


# ---------------------------------------------------------------- coalescing


def test_step_many_sends_one_append_entries_per_peer_for_a_batch():
    """API: step_many coalesces what it sends: one AppendEntries per peer carrying every new
    entry (within the batch limits), not one per proposal."""
    node, _ = steady_leader(5)
    last = node.log.last_index()
    out = node.step_many([Event.Propose(b"%d" % i) for i in range(10)])
    pairs = send_pairs(out, AppendEntries)
    assert sorted(to for to, _ in pairs) == [2, 3, 4, 5]
    for _, m in pairs:
        assert m.prev_log_index == last
        assert [e.command for e in m.entries] == [b"%d" % i for i in range(10)]


def test_step_many_respects_max_batch():
    """API: the coalesced entries are split at max_batch entries per message."""
    node, _ = steady_leader(3, max_batch=4)
    out = node.step_many([Event.Propose(b"%d" % i) for i in range(10)])
    to2 = [m for to, m in send_pairs(out, AppendEntries) if to == 2]
    assert [len(m.entries) for m in to2] == [4, 4, 2]
    assert [m.prev_log_index for m in to2] == [1, 5, 9]


def test_step_many_equals_stepping_one_at_a_time():
    """API: step_many "is as safe as stepping them one at a time": the same log, commit index,
    applies and term."""
    events = [Event.Propose(b"%d" % i) for i in range(6)]
    a, _ = steady_leader()
    b, _ = steady_leader()
    applied_a = []
    for e in events:
        applied_a += of_type(a.step(e), Action.Apply)
    applied_b = of_type(b.step_many(events), Action.Apply)
    for node in (a, b):
        last = node.log.last_index()
        node.step(msg(AppendEntriesReply(node.term, True, 2, last)))
    assert a.log.entries(1, a.log.last_index()) == b.log.entries(1, b.log.last_index())
    assert (a.commit_index, a.term, a.last_applied) == (b.commit_index, b.term, b.last_applied)
    assert applied_a == applied_b


@pytest.mark.parametrize(
    "middle",
    [
        [Event.Tick()],
        [Event.Tick(), Event.Tick(), Event.Tick()],  # a heartbeat in the middle
        [Event.Read("r")],
        [Event.Propose("bad"), Event.Tick()],
        [Event.TransferLeadership(1), Event.Snapshot(0, b"")],
    ],
    ids=["tick", "heartbeat", "read", "rejected-then-tick", "noops"],
)
def test_step_many_keeps_proposals_on_both_sides_of_other_events(middle):
    """API: step_many is "as safe as stepping them one at a time": proposals before and after
    other events in the same batch are all appended, in order (none silently dropped)."""
    node, _ = steady_leader()
    last = node.log.last_index()
    events = [Event.Propose(b"a")] + middle + [Event.Propose(b"b")] + middle + [Event.Propose(b"c")]
    out = node.step_many(events)
    commands = [e.command for e in node.log.entries(last + 1, node.log.last_index())]
    assert commands == [b"a", b"b", b"c"]
    sent = [e.command for to, m in send_pairs(out, AppendEntries) if to == 2 for e in m.entries]
    assert sent == [b"a", b"b", b"c"]


def test_step_many_equals_stepping_one_at_a_time_with_mixed_events():
    """API: the same batch, stepped one event at a time, leaves the same log and state."""
    def events(node):
        last = node.log.last_index()
        return [
            Event.Propose(b"1"),
            Event.Tick(),
            Event.Propose(b"2"),
            msg(AppendEntriesReply(node.term, True, 2, last)),
            Event.Propose(b"3"),
            Event.Read("r"),
            Event.Propose(b"4"),
        ]

    a, _ = steady_leader()
    b, _ = steady_leader()
    for e in events(a):
        a.step(e)
    b.step_many(events(b))
    assert a.log.entries(1, a.log.last_index()) == b.log.entries(1, b.log.last_index())
    assert a.log.last_index() == 5


# ---------------------------------------------------------------- refused events


@pytest.mark.parametrize(
    "event",
    [Event.Propose(b"x"), Event.Read("r"), Event.AddServer(4), Event.RemoveServer(2), Event.AddLearner(4), Event.PromoteLearner(4)],
)
def test_refused_client_events_raise_from_step_and_are_rejected_by_step_many(event):
    """API: a client event a follower cannot serve raises NotLeaderError (naming the leader)
    from step(), and becomes Action.Rejected(event, error) in step_many()."""
    net = Network([1, 2, 3])
    net.elect(1)
    with pytest.raises(NotLeaderError) as info:
        net.step(2, event)
    assert info.value.leader == 1
    out = net.step_many(2, [event])
    [rejected] = of_type(out, Action.Rejected)
    assert rejected.event is event
    assert isinstance(rejected.error, NotLeaderError) and rejected.error.leader == 1


def test_step_many_rejects_only_the_refused_events_in_place():
    """API: "nothing else in the batch is affected": good proposals around a bad one are taken,
    and each Rejected names its own event."""
    node, _ = steady_leader()
    last = node.log.last_index()
    bad_type = Event.Propose("not bytes")
    too_big = Event.Propose(b"x" * (node.config.max_entry_bytes + 1))
    out = node.step_many([Event.Propose(b"a"), bad_type, Event.Propose(b"b"), too_big, Event.Propose(b"c")])
    rejected = of_type(out, Action.Rejected)
    assert [r.event for r in rejected] == [bad_type, too_big]
    assert isinstance(rejected[0].error, TypeError)
    assert isinstance(rejected[1].error, RaftError)
    assert [e.command for e in node.log.entries(last + 1, node.log.last_index())] == [b"a", b"b", b"c"]


def test_step_raises_for_bad_proposals_and_non_events():
    """API: step() raises TypeError for a non-event or a non-bytes command, RaftError for an
    oversized one; nothing is appended."""
    node, _ = steady_leader(max_entry_bytes=8)
    last = node.log.last_index()
    with pytest.raises(TypeError):
        node.step("tick")
    with pytest.raises(TypeError):
        node.step(Event.Propose("text"))
    with pytest.raises(RaftError):
        node.step(Event.Propose(b"123456789"))
    with pytest.raises(TypeError):
        node.step(Event.Message("not a message"))
    assert node.log.last_index() == last
    node.step(Event.Propose(bytearray(b"12345678")))  # bytes-like is fine, up to the limit
    assert node.log.entry(last + 1).command == b"12345678"
    [r] = of_type(node.step_many([object()]), Action.Rejected)
    assert isinstance(r.error, TypeError)


def test_step_many_rejects_proposals_after_losing_leadership_mid_batch():
    """API: a batch is stepped in order; once a message in it deposes the leader, the proposals
    after it are refused (and the ones before it were appended, then may be overwritten)."""
    node, _ = steady_leader()
    term = node.term
    out = node.step_many([Event.Propose(b"before"), msg(AppendEntries(term + 1, 3, 0, 0, [], 0)), Event.Propose(b"after")])
    assert node.role is Role.FOLLOWER
    [rejected] = of_type(out, Action.Rejected)
    assert rejected.event.command == b"after" and isinstance(rejected.error, NotLeaderError)
    assert rejected.error.leader == 3


def test_config_in_progress_is_rejected_by_step_many():
    """API: ConfigInProgressError is a refused client event like NotLeaderError."""
    node, _ = steady_leader()
    out = node.step_many([Event.AddServer(4), Event.AddServer(5)])
    [rejected] = of_type(out, Action.Rejected)
    assert rejected.event == Event.AddServer(5) and isinstance(rejected.error, ConfigInProgressError)
    assert node.members == (1, 2, 3, 4)


# ---------------------------------------------------------------- recovery


def recovered_log():
    log = MemoryLog()
    log.apply_snapshot(Snapshot(5, 2, Membership.of([1, 2, 3, 4]), b"app state"))
    log.append(
        [
            entry(2, 6),
            LogEntry(3, 7, EntryKind.CONFIG, Membership.of([1, 2, 3, 4, 5]).encode()),
            entry(3, 8),
        ]
    )
    log.set_hard_state(HardState(3, 2))
    return log


def test_recovery_from_a_log():
    """API / Figure 2: construction recovers term and vote from the hard state, membership from
    the newest config entry (else the snapshot), and commit/applied from the snapshot index; the
    configured peers are ignored once the log says otherwise. Construction emits nothing and the
    node starts as a follower."""
    node = RaftNode(RaftConfig(1, [2, 3]), recovered_log())
    assert node.role is Role.FOLLOWER and node.leader is None
    assert node.term == 3 and node.voted_for == 2
    assert node.members == (1, 2, 3, 4, 5)
    assert node.commit_index == node.last_applied == 5
    assert node.log.snapshot().data == b"app state"
    assert node.step(Event.Tick()) == []  # nothing replayed: no Apply, no MembershipChanged
    # the vote survives: a different candidate in term 3 is refused
    out = node.step(msg(RequestVote(3, 4, 100, 3, force=True)))
    assert [m.vote_granted for m in sends(out)] == [False]


def test_recovery_uses_the_snapshot_config_when_no_config_entry_follows():
    log = MemoryLog()
    log.apply_snapshot(Snapshot(5, 2, Membership.of([1, 7], [9]), b""))
    node = RaftNode(RaftConfig(1, [2, 3]), log)
    assert node.members == (1, 7) and node.learners == (9,)
    assert node.commit_index == 5


def test_recovered_config_entry_reverts_to_the_snapshot_config_when_truncated():
    """thesis §4.1: after a restart, the configuration from an uncommitted config entry still
    falls back to the one before it (here: the snapshot's) when a leader truncates it."""
    node = RaftNode(RaftConfig(1, [2, 3]), recovered_log())
    out = node.step(msg(AppendEntries(4, 2, 6, 2, [entry(4, 7)], 6)))
    assert node.members == (1, 2, 3, 4)
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3, 4), ())]
    assert node.commit_index == 6


def test_recovery_adopts_a_term_newer_than_the_hard_state():
    """Figure 2: currentTerm is at least the term of any entry in the log (entries reached the
    disk, the hard state written with them did not)."""
    log = MemoryLog()
    log.append([entry(1, 1), entry(4, 2)])
    log.set_hard_state(HardState(2, 3))
    node = RaftNode(RaftConfig(1, [2, 3]), log)
    assert node.term == 4 and node.voted_for is None


def test_construction_spellings():
    """API: RaftNode.new(config) and RaftNode.with_log(config, log) mirror raft-io."""
    config = RaftConfig(1, [2, 3])
    assert RaftNode.new(config).log.last_index() == 0
    log = recovered_log()
    assert RaftNode.with_log(config, log).log is log
    assert RaftNode(config).term == 0


# ---------------------------------------------------------------- view and applies


def test_read_only_view():
    net = Network([1, 2, 3])
    net.elect(2)
    node = net[2]
    assert node.id == 2 and node.is_leader() and node.role is Role.LEADER
    assert node.leader == 2 and node.term == 1
    assert node.members == (1, 2, 3) and node.learners == ()
    assert node.commit_index == node.last_applied == 1
    assert isinstance(node.members, tuple)
    with pytest.raises(AttributeError):
        node.term = 5  # type: ignore[misc]


def test_only_normal_entries_are_applied():
    """API: NOOP and CONFIG entries are never handed to the application; Apply indexes strictly
    increase and skip them."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.add_node(4, RaftConfig(4, join=True))
    net.propose(1, b"a")
    net.deliver_all()
    net.step(1, Event.AddLearner(4))
    net.propose(1, b"b")
    net.deliver_all()
    net.heartbeat(1)
    for i in (1, 2, 3, 4):
        assert [(idx, cmd) for idx, _, cmd in net.applied_entries[i]] == [(2, b"a"), (4, b"b")]


# ---------------------------------------------------------------- determinism


def run_scenario(seed):
    ids = [1, 2, 3, 4, 5]
    net = Network(ids, configs={i: RaftConfig(i, ids, seed=seed * 100 + i) for i in ids})
    trace = []
    for round_ in range(150):
        net.tick_all(1)
        trace.append(sum(len(a) for a in net.actions.values()))
        leaders = net.leaders()
        if leaders and round_ % 5 == 0:
            net.propose(leaders[0], b"r%d" % round_)
        if round_ == 60:
            net.partition(leaders[:1], [i for i in net.ids if i not in leaders[:1]])
        if round_ == 110:
            net.heal()
    per_node = {
        i: [framing.encode(a.message) if type(a) is Action.Send else repr(a) for a in net.actions[i]]
        for i in net.ids
    }
    return per_node, trace


def test_same_config_seed_and_events_give_the_same_actions():
    """API: step is deterministic - the same config, seed, log and events produce the same
    actions, byte for byte after encoding."""
    first = run_scenario(seed=7)
    second = run_scenario(seed=7)
    assert first == second
    assert sum(len(v) for v in first[0].values()) > 100


def test_a_different_seed_changes_the_timing():
    """§5.2: the seed drives the randomised timeouts (so a different one changes the run)."""
    assert run_scenario(seed=7) != run_scenario(seed=8)


def test_large_commit_jump_applies_every_entry_once_in_order():
    """API: Apply indexes strictly increase, each once - also when one message commits
    thousands of entries at a time (the node applies in chunks)."""
    node = node_alone(2, [1, 2, 3])
    n = 2500
    ents = [entry(1, i, b"%d" % i) for i in range(1, n + 1)]
    out = node.step(msg(AppendEntries(1, 1, 0, 0, ents, n)))
    applies = of_type(out, Action.Apply)
    assert [a.index for a in applies] == list(range(1, n + 1))
    assert applies[-1].command == b"%d" % n
    assert node.last_applied == n


def test_a_cluster_driven_only_by_step_many_batches():
    """API: step_many is the throughput path a runtime uses - each turn hands a node every
    message that arrived, a tick and the client proposals at once. A cluster driven that way
    elects a leader and applies exactly the accepted proposals, in the same order everywhere;
    every refused proposal is reported with Rejected, none vanishes."""
    ids = [1, 2, 3]
    net = BarrierNetwork(ids, logs={i: CountingLog() for i in ids})
    accepted, rejected = [], []
    counter = 0
    for turn in range(200):
        inbox = {i: [] for i in ids}
        batch, net.queue = net.queue, []
        for f, t, m in batch:
            inbox[t].append(Event.Message(m))
        for i in ids:
            half = len(inbox[i]) // 2
            proposals = []
            if 20 < turn < 150 and turn % 2 == 0:
                for _ in range(3):
                    counter += 1
                    proposals.append(Event.Propose(b"p%d" % counter))
                # proposals before, between and after the messages and the tick
                events = [proposals[0], *inbox[i][:half], Event.Tick(), proposals[1], *inbox[i][half:], proposals[2]]
            else:
                events = [*inbox[i][:half], Event.Tick(), *inbox[i][half:]]
            out = net.step_many(i, events)
            refused = {id(a.event) for a in of_type(out, Action.Rejected)}
            for p in proposals:
                (rejected if id(p) in refused else accepted).append(p.command)
    for _ in range(3):
        net.tick_all(net.configs[1].heartbeat_interval)
    assert accepted and rejected  # both paths were exercised
    [leader] = net.leaders()
    for i in ids:
        assert net.applied[i] == accepted
