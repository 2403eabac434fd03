"""SimLog: writes are visible at once but survive a crash only once synced."""

from raftfast import Event, HardState, LogEntry, Membership, RaftConfig, RaftLog, RaftNode, Snapshot
from raftfast.testing import SimLog


def entries(first, term, *commands):
    return [LogEntry(term, first + i, command=c) for i, c in enumerate(commands)]


def test_is_a_raft_log_and_reads_see_unsynced_writes():
    log = SimLog()
    assert isinstance(log, RaftLog)
    log.append(entries(1, 1, b"a", b"b"))
    log.set_hard_state(HardState(1, 2))
    assert (log.last_index(), log.last_term(), log.term_at(2)) == (2, 1, 1)
    assert log.entry(1).command == b"a"
    assert [e.command for e in log.batch(1, 10, 1 << 20)] == [b"a", b"b"]
    assert log.hard_state() == HardState(1, 2)
    assert log.pending == 2


def test_crash_keeps_only_synced_writes():
    log = SimLog()
    log.append(entries(1, 1, b"a"))
    log.set_hard_state(HardState(1, 1))
    log.sync()
    log.append(entries(2, 1, b"b"))
    log.set_hard_state(HardState(2, None))
    recovered = log.crash()
    assert recovered.last_index() == 1
    assert recovered.entry(1).command == b"a"
    assert recovered.hard_state() == HardState(1, 1)
    assert recovered.pending == 0
    # The crashed-from log is untouched: it still holds its unsynced writes.
    assert log.last_index() == 2 and log.pending == 2


def test_unsynced_truncate_is_undone_by_a_crash():
    log = SimLog()
    log.append(entries(1, 1, b"a", b"b", b"c"))
    log.sync()
    log.truncate(2)
    log.append(entries(2, 2, b"x"))
    assert [e.command for e in log.entries(1, 2)] == [b"a", b"x"]
    recovered = log.crash()
    assert [e.command for e in recovered.entries(1, 3)] == [b"a", b"b", b"c"]
    log.sync()
    assert [e.term for e in log.crash().entries(1, 2)] == [1, 2]


def test_snapshot_durability():
    log = SimLog()
    log.append(entries(1, 1, b"a", b"b", b"c"))
    log.sync()
    snapshot = Snapshot(2, 1, Membership.of([1, 2, 3]), b"state")
    log.apply_snapshot(snapshot)
    assert log.snapshot_index() == 2 and log.term_at(2) == 1 and log.term_at(1) is None
    assert log.crash().snapshot_index() == 0
    log.sync()
    recovered = log.crash()
    assert recovered.snapshot() == snapshot
    assert recovered.last_index() == 3 and recovered.entry(3).command == b"c"


def test_appended_entries_are_copied():
    log = SimLog()
    batch = entries(1, 1, b"a")
    log.append(batch)
    batch[0].command = b"mutated"
    log.sync()
    assert log.crash().entry(1).command == b"a"


def test_counts_syncs_and_writes():
    log = SimLog()
    log.sync()
    log.append(entries(1, 1, b"a"))
    log.sync()
    assert (log.syncs, log.writes, log.pending) == (2, 1, 0)


def test_failed_write_is_not_recorded():
    log = SimLog()
    try:
        log.append(entries(5, 1, b"gap"))
    except ValueError:
        pass
    assert log.pending == 0 and log.writes == 0


def test_a_node_recovers_its_vote_from_the_synced_log():
    log = SimLog()
    config = RaftConfig(1, [1, 2, 3], election_timeout=(5, 10), heartbeat_interval=1, pre_vote=False)
    node = RaftNode(config, log)
    for _ in range(30):
        node.step(Event.Tick())
    assert node.term >= 1 and log.pending == 0  # campaigning synced the term and vote
    restarted = RaftNode(config, log.crash())
    assert (restarted.term, restarted.log.hard_state().voted_for) == (node.term, 1)
