"""Log compaction and InstallSnapshot (Raft paper §7, thesis chapter 5)."""

from __future__ import annotations

from raftfast import (
    Action,
    AppendEntries,
    AppendEntriesReply,
    Event,
    InstallSnapshot,
    InstallSnapshotReply,
    Membership,
    RaftConfig,
    Snapshot,
)
from raftharness import Network, entry, log_terms, node_alone, of_type, send_pairs, sends


def msg(m):
    return Event.Message(m)


def compacted_cluster(lagging=3, before=10, after=3):
    """Leader 1 of {1, 2, 3}; node `lagging` cut off while `before` commands commit; the leader
    compacts through them; then `after` more commands commit. Returns (net, snapshot index)."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(lagging)
    for i in range(before):
        net.propose(1, b"old%d" % i)
    net.deliver_all()
    net.heartbeat(1)
    index = net[1].last_applied
    net.step(1, Event.Snapshot(index, b"state@%d" % index))
    assert net[1].log.snapshot_index() == index
    for i in range(after):
        net.propose(1, b"new%d" % i)
    net.deliver_all()
    return net, index


def test_follower_behind_the_compaction_point_gets_the_snapshot_then_the_tail():
    """§7: "the leader must occasionally send snapshots to followers that lag behind ... when the
    leader has already discarded the next log entry that it needs to send to a follower." The
    follower replaces its state machine with the snapshot (RestoreSnapshot), then receives and
    applies the entries after it as usual."""
    net, index = compacted_cluster()
    net.heal()
    net.clear_actions()
    net.heartbeat(1)
    net.heartbeat(1)
    snaps = sends(net.actions[1], InstallSnapshot)
    assert len(snaps) == 1 and snaps[0].snapshot.index == index
    assert snaps[0].snapshot.data == b"state@%d" % index
    assert snaps[0].snapshot.config == Membership.of([1, 2, 3])
    [restore] = of_type(net.actions[3], Action.RestoreSnapshot)
    assert (restore.index, restore.term, restore.data) == (index, 1, b"state@%d" % index)
    kinds = [type(a) for a in net.actions[3]]
    assert kinds.index(Action.RestoreSnapshot) < kinds.index(Action.Apply)  # snapshot first
    assert net.applied[3] == [b"new0", b"new1", b"new2"]  # then only the tail
    assert net[3].commit_index == net[3].last_applied == net[1].commit_index
    assert net[3].log.snapshot_index() == index
    tail = net[1].log.entries(index + 1, net[1].log.last_index())
    assert net[3].log.entries(index + 1, net[3].log.last_index()) == tail


def test_snapshot_carries_the_configuration():
    """§7 / thesis §5.1: a snapshot records the latest configuration as of its last index, so a
    server that starts from it knows the cluster (here a join node that never saw the log)."""
    net, index = compacted_cluster(lagging=3, before=6, after=0)
    net.add_node(4, RaftConfig(4, join=True))
    net.heal()  # everything node 4 needs before the learner entry is compacted away
    net.heartbeat(1)
    net.step(1, Event.AddLearner(4))
    net.deliver_all()
    net.heartbeat(1)
    assert of_type(net.actions[4], Action.RestoreSnapshot)
    assert net[4].learners == (4,) and net[4].members == (1, 2, 3)
    assert net[4].log.snapshot().config == Membership.of([1, 2, 3])


def test_snapshot_hint_fires_at_the_threshold():
    """thesis §5.1: each server snapshots independently once its log grows past a threshold;
    the node hints Action.Snapshot once `last_applied` is `snapshot_threshold` past its last
    snapshot, and again only after another threshold's worth of entries."""
    net = Network([1], snapshot_threshold=5)
    net.elect(1)  # applies the no-op: index 1
    hints = []
    for i in range(3):
        hints += of_type(net.propose(1, b"%d" % i), Action.Snapshot)
    assert hints == []  # applied index 4: not yet
    hints = of_type(net.propose(1, b"3"), Action.Snapshot)
    assert hints == [Action.Snapshot(5, 1)]
    net.step(1, Event.Snapshot(5, b"five"))
    assert net[1].log.snapshot_index() == 5
    for i in range(4):
        assert of_type(net.propose(1, b"x"), Action.Snapshot) == []
    assert of_type(net.propose(1, b"y"), Action.Snapshot) == [Action.Snapshot(10, 1)]


def test_snapshot_hint_fires_once_enough_command_bytes_were_applied():
    """thesis §5.1 with the threshold in bytes (`snapshot_bytes`): an entry may carry one write
    or a whole batch, so the log's memory is bounded by the bytes applied since the last hint,
    not only by their count. Counting starts afresh at each hint; no-ops count nothing."""
    net = Network([1], snapshot_bytes=100)
    net.elect(1)  # applies the no-op: index 1, no bytes
    hints = []
    for i in range(3):
        hints += of_type(net.propose(1, b"x" * 30), Action.Snapshot)
    assert hints == []  # 90 bytes applied
    assert of_type(net.propose(1, b"y" * 10), Action.Snapshot) == [Action.Snapshot(5, 1)]
    assert of_type(net.propose(1, b"z" * 99), Action.Snapshot) == []  # 99 since the hint
    assert of_type(net.propose(1, b"!"), Action.Snapshot) == [Action.Snapshot(7, 1)]
    assert of_type(net.propose(1, b"w" * 500), Action.Snapshot) == [Action.Snapshot(8, 1)]  # one large entry


def test_snapshot_hint_by_bytes_or_count_whichever_comes_first():
    net = Network([1], snapshot_bytes=1000, snapshot_threshold=3)
    net.elect(1)
    assert of_type(net.propose(1, b"a"), Action.Snapshot) == []
    assert of_type(net.propose(1, b"b"), Action.Snapshot) == [Action.Snapshot(3, 1)]  # count
    assert of_type(net.propose(1, b"c" * 1000), Action.Snapshot) == [Action.Snapshot(4, 1)]  # bytes


def test_no_snapshot_hint_when_disabled():
    """API: snapshot_threshold=0 disables the hint."""
    net = Network([1])
    net.elect(1)
    for i in range(50):
        assert of_type(net.propose(1, b"%d" % i), Action.Snapshot) == []


def test_compaction_ignores_unapplied_or_stale_indexes():
    """§7: a server snapshots only what its state machine has applied; an answer for an index
    not applied yet, or not past the current snapshot, is ignored."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.isolate(2)
    net.propose(1, b"uncommitted")
    applied = net[1].last_applied
    net.step(1, Event.Snapshot(applied + 1, b"future"))
    assert net[1].log.snapshot_index() == 0
    net.step(1, Event.Snapshot(applied, b"now"))
    assert net[1].log.snapshot_index() == applied
    net.step(1, Event.Snapshot(applied, b"again"))
    net.step(1, Event.Snapshot(0, b"old"))
    assert net[1].log.snapshot().data == b"now"


def test_snapshot_describing_a_prefix_keeps_the_following_entries():
    """§7: "If instead the follower receives a snapshot that describes a prefix of its log, then
    log entries covered by the snapshot are deleted but entries following the snapshot are still
    valid and must be retained." No RestoreSnapshot: the follower applies from its own log."""
    node = node_alone(2, [1, 2, 3])
    node.step(msg(AppendEntries(1, 1, 0, 0, [entry(1, i) for i in range(1, 6)], 0)))
    out = node.step(msg(InstallSnapshot(1, 1, Snapshot(3, 1, Membership.of([1, 2, 3]), b"s3"))))
    assert of_type(out, Action.RestoreSnapshot) == []
    assert sends(out, InstallSnapshotReply) == [InstallSnapshotReply(1, 2, 3)]
    assert node.log.last_index() == 5 and log_terms(node.log)[-2:] == [1, 1]
    assert node.commit_index == 3
    assert [a.index for a in of_type(out, Action.Apply)] == [1, 2, 3]


def test_snapshot_conflicting_with_the_log_replaces_it():
    """§7: "Usually the snapshot will contain new information not already in the recipient's
    log. In this case, the follower discards its entire log; it is all superseded by the
    snapshot and may have uncommitted entries that conflict with the snapshot.\""""
    node = node_alone(2, [1, 2, 3])
    node.step(msg(AppendEntries(1, 1, 0, 0, [entry(1, i) for i in range(1, 4)], 1)))
    out = node.step(msg(InstallSnapshot(3, 3, Snapshot(5, 2, Membership.of([1, 2, 3]), b"s5"))))
    assert of_type(out, Action.RestoreSnapshot) == [Action.RestoreSnapshot(5, 2, b"s5")]
    assert node.log.last_index() == 5 and node.log.term_at(3) is None
    assert node.commit_index == node.last_applied == 5
    assert node.leader == 3 and node.term == 3
    # the next entries follow the snapshot
    out = node.step(msg(AppendEntries(3, 3, 5, 2, [entry(3, 6, b"after")], 6)))
    assert of_type(out, Action.Apply) == [Action.Apply(6, 3, b"after")]


def test_stale_snapshot_is_not_installed():
    """§7: a snapshot no newer than what the follower has committed brings nothing; it answers
    with its commit index so the leader moves on."""
    node = node_alone(2, [1, 2, 3])
    node.step(msg(AppendEntries(1, 1, 0, 0, [entry(1, i) for i in range(1, 6)], 5)))
    out = node.step(msg(InstallSnapshot(1, 1, Snapshot(3, 1, Membership.of([1, 2, 3]), b"s3"))))
    assert of_type(out, Action.RestoreSnapshot) == []
    assert sends(out, InstallSnapshotReply) == [InstallSnapshotReply(1, 2, 5)]
    assert node.log.snapshot_index() == 0 and node.last_applied == 5


def test_lost_snapshot_is_sent_again():
    """§7 / liveness: the leader waits for a snapshot's reply, but not forever: if the
    InstallSnapshot (or its reply) is lost, it tries again."""
    net, index = compacted_cluster()
    net.heal()
    net.drop_filter = lambda f, t, m: type(m) is InstallSnapshot
    net.clear_actions()
    net.heartbeat(1)
    assert len(sends(net.actions[1], InstallSnapshot)) == 1
    net.drop_filter = None
    hi = net.configs[1].election_timeout[1]
    net.tick_all(2 * hi)
    assert len(sends(net.actions[1], InstallSnapshot)) >= 2
    assert net[3].log.snapshot_index() == index
    assert net[3].commit_index == net[1].commit_index
    assert net.applied[3] == [b"new0", b"new1", b"new2"]


def test_leader_keeps_replicating_after_compaction_to_followers_in_step():
    """§7: compaction is invisible to followers that are up to date: they keep getting plain
    AppendEntries with the right prev index/term (the term of the snapshot's last entry)."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    net.deliver_all()
    index = net[1].last_applied
    net.step(1, Event.Snapshot(index, b"s"))
    net.clear_actions()
    out = net.propose(1, b"b")
    for to, m in send_pairs(out, AppendEntries):
        assert (m.prev_log_index, m.prev_log_term) == (index, 1)
    assert sends(out, InstallSnapshot) == []
    net.deliver_all()
    assert all(r.success for r in sends(net.actions[2], AppendEntriesReply))
    net.heartbeat(1)
    assert net.applied[2] == [b"a", b"b"]


def test_followers_snapshot_independently():
    """§7: "each server takes snapshots independently, covering just the committed entries in
    its log." A follower gets the hint, compacts, and keeps replicating normally."""
    net = Network([1, 2, 3], snapshot_threshold=4)
    net.elect(1)
    for i in range(6):
        net.propose(1, b"%d" % i)
    net.deliver_all()
    net.heartbeat(1)
    hints = of_type(net.actions[2], Action.Snapshot)
    assert hints == [Action.Snapshot(7, 1)]  # applied 1..7 in one step: one hint, at 7
    net.step(2, Event.Snapshot(net[2].last_applied, b"follower state"))
    assert net[2].log.snapshot_index() == net[2].last_applied == 7
    assert net[2].log.snapshot().config == Membership.of([1, 2, 3])
    net.propose(1, b"after")
    net.deliver_all()
    net.heartbeat(1)
    assert net.applied[2][-1] == b"after"
    assert of_type(net.actions[2], Action.RestoreSnapshot) == []
