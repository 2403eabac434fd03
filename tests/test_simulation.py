"""The deterministic simulator (raftfast.testing) and its invariant checker.

The random cases run 2,000 seeds; a failure prints the seed and the command that replays it.
The checker tests plant each kind of violation in hand-built node states, because a checker
that cannot fail proves nothing.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from raftfast import Action, AppendEntries, EntryKind, Event, LogEntry, Membership, MemoryLog, Role
from raftfast.testing import (
    Cluster,
    Faults,
    InvariantChecker,
    InvariantViolation,
    Network,
    SimLog,
    run_random,
)
from raftfast.testing.soak import main as soak_main
from raftfast.testing.soak import nodes_for, replay_command

CASES = 20
SEEDS_PER_CASE = 100
STEPS = 150  # ticks of chaos per seed, before the liveness check


# -- random simulation ----------------------------------------------------------------------


@pytest.mark.parametrize("case", range(CASES))
def test_random_seeds(case):
    """Zero invariant violations and a live cluster at the end, for 3- and 5-node seeds."""
    for seed in range(case * SEEDS_PER_CASE, (case + 1) * SEEDS_PER_CASE):
        nodes = nodes_for(seed, None)
        try:
            run_random(seed, STEPS, nodes)
        except Exception as failure:
            replay = replay_command(seed, nodes, STEPS)
            raise AssertionError(f"seed {seed}: {failure}\nreplay: {replay}") from failure


def test_same_seed_same_trace():
    first = run_random(11, 120, 5)
    again = run_random(11, 120, 5)
    assert first.trace_hash == again.trace_hash
    assert first == again
    assert run_random(12, 120, 5).trace_hash != first.trace_hash


def test_a_seed_replays_in_another_process():
    """Soak workers and replays run in fresh processes, with their own str hash seeds."""
    script = "from raftfast.testing import run_random; print(run_random(5, 80, 3).trace_hash)"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == run_random(5, 80, 3).trace_hash


def test_the_driver_exercises_every_feature():
    """Across a few seeds, the random driver really does batch and single-step, snapshot,
    restore, change membership, crash and read; otherwise the seeds above test less than
    they claim."""
    totals: dict = {}
    for seed in range(40):
        for key, value in run_random(seed, STEPS, nodes_for(seed, None)).stats.items():
            totals[key] = totals.get(key, 0) + value
    for key in ("step", "step_many", "refused", "applied", "reads", "read_failed", "snapshots",
                "restores", "membership_changed", "crashes", "pauses", "changes"):  # fmt: skip
        assert totals[key] > 0, (key, totals)


def test_soak_command(capsys):
    assert soak_main(["--seeds", "4", "--start", "3", "--steps", "60", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "OK: 4 seeds" in out and "zero violations" in out


# -- the network ----------------------------------------------------------------------------


def heartbeat(term: int) -> AppendEntries:
    return AppendEntries(term, 1, 0, 0, [], 0)


def test_network_delivers_by_time_and_replays_by_seed():
    def traffic(seed):
        net = Network(seed, drop=0.2, duplicate=0.2, reorder=0.5, max_delay=4)
        for t in range(50):
            net.send(1, 2, heartbeat(t), now=t)
        return [(now, m.term) for now in range(60) for _, _, m in net.deliver(now)]

    delivered = traffic(7)
    assert delivered == traffic(7) and delivered != traffic(8)
    assert all(now > term for now, term in delivered)  # at least one tick of latency
    terms = [term for _, term in delivered]
    assert terms != sorted(terms)  # reordered
    assert len(set(terms)) < 50  # some dropped
    assert len(terms) > len(set(terms))  # some duplicated


def test_partitions_cut_traffic_in_flight_until_healed():
    net = Network(0)
    net.partition([[1], [2, 3]])
    for dst in (2, 3):
        net.send(1, dst, heartbeat(1), now=0)
    net.send(2, 3, heartbeat(2), now=0)
    assert [(s, d) for s, d, _ in net.deliver(1)] == [(2, 3)]
    net.send(1, 2, heartbeat(3), now=1)
    net.heal()
    assert [(s, d) for s, d, _ in net.deliver(2)] == [(1, 2)]  # healed before delivery
    net.isolate(3)
    assert net.connected(1, 2) and net.connected(1, 4)  # node 4, never named, is with the rest
    assert not net.connected(3, 1) and not net.connected(3, 4)
    net.partition([[1, 2]])
    net.isolate(2)
    assert not net.connected(1, 2) and not net.connected(1, 3) and net.connected(3, 4)
    with pytest.raises(ValueError, match="drop"):
        Network(0, drop=1.5)


# -- durable logs ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_wal_backed_cluster_survives_torn_crashes(tmp_path, seed):
    """The log_factory hook with real WalLogs: each crash is a power cut that tears whatever
    the WAL had not fsynced (FaultyIO), and the restarted node recovers from the files."""
    from raftfast.wal import WalLog
    from raftfast.wal.faults import FaultyIO
    from raftfast.wal.wal import MIN_SEGMENT_BYTES

    rng = random.Random(seed)
    ios = {}

    def factory(node_id, previous):
        if previous is not None:
            ios[node_id].crash("torn", rng)
        ios[node_id] = FaultyIO()
        path = tmp_path / str(node_id)
        return WalLog.open(path, io=ios[node_id], segment_bytes=MIN_SEGMENT_BYTES)

    cluster = Cluster(3, seed, snapshot_threshold=10, log_factory=factory, faults=Faults(crash=0.03))
    cluster.run(200, chaos=True)
    assert cluster.stats["crashes"] >= 3 and cluster.stats["snapshots"] > 0
    cluster.check_liveness()


# -- liveness -------------------------------------------------------------------------------


def elect(cluster: Cluster, ticks: int = 200):
    for _ in range(ticks):
        cluster.tick()
        leader = cluster.leader()
        if leader is not None:
            return leader
    raise AssertionError(f"no leader after {ticks} ticks")


def promote(cluster: Cluster, learner: int, attempts: int = 10) -> None:
    """PromoteLearner is refused until the learner has caught up: retry."""
    for _ in range(attempts):
        cluster.to_leader(Event.PromoteLearner(learner))
        cluster.run(20)
        if learner in cluster.settle().members:
            return
    raise AssertionError(f"learner {learner} was never promoted")


@pytest.mark.parametrize("n", [3, 5])
def test_commits_through_partitions_crashes_and_membership_changes(n):
    """Whenever a majority is connected, proposals commit (Done-when of issue 2)."""
    cluster = Cluster(n, seed=n, drop=0.02, duplicate=0.02, reorder=0.1)
    elect(cluster)
    cluster.check_progress()
    minority = (n - 1) // 2

    # The leader and others in a minority partition: the majority side elects and commits.
    leader = cluster.leader()
    others = [i for i in sorted(cluster.nodes) if i != leader.id]
    majority_side = others[minority - 1 :]
    cluster.partition([[leader.id] + others[: minority - 1], majority_side])
    cluster.check_progress()
    assert cluster.leader().id in majority_side
    cluster.heal()

    # A minority crashes, the leader among it; then everyone restarts.
    leader = cluster.settle()
    victims = [leader.id] + [i for i in sorted(cluster.nodes) if i != leader.id][: minority - 1]
    for nid in victims:
        cluster.crash(nid)
    cluster.check_progress()
    assert cluster.leader().id not in victims
    for nid in victims:
        cluster.restart(nid)
    cluster.check_progress()

    # Membership: add a voter and a learner, promote the learner, remove the leader.
    voter = cluster.add_server()
    cluster.check_progress()
    learner = cluster.add_server(learner=True)
    cluster.check_progress()
    promote(cluster, learner)
    old = cluster.settle()
    assert {voter, learner} <= set(old.members), old.members
    cluster.submit(old.id, Event.RemoveServer(old.id))
    cluster.run(80)
    new = cluster.settle()
    assert new.id != old.id and old.id not in new.members and old.id in cluster.gone
    cluster.check_progress()

    # And through a random minority of crashes and isolations, again.
    cluster.check_liveness()


@pytest.mark.parametrize("n", [3, 5])
def test_a_new_voter_votes_before_it_learns_it_is_one(n):
    """Thesis §4.1: a configuration adding a voter can commit without reaching it; then the
    only connected majority needs its vote (found by this simulator as a liveness failure)."""
    cluster = Cluster(n, seed=1)
    leader = elect(cluster)
    cluster.check_progress()
    # The new voter hears nothing; the old members commit its addition without it.
    new = cluster.add_server()
    cluster.isolate(new)
    cluster.run(40)
    assert new in leader.members and leader.commit_index == leader.log.last_index()
    # Then the leader (and for 5 nodes one more old member) is cut off: the rest are a
    # majority of the new configuration only with the new voter's vote.
    cluster.heal()
    others = [i for i in range(1, n + 1) if i != leader.id]
    cluster.partition([[leader.id] + others[: (n - 1) // 2 - 1]])
    cluster.check_progress()


# -- the checker catches planted violations -------------------------------------------------


@dataclass
class FakeNode:
    """The attributes InvariantChecker reads, set by hand."""

    id: int
    log: object = field(default_factory=MemoryLog)
    role: Role = Role.FOLLOWER
    term: int = 0
    commit_index: int = 0
    last_applied: int = 0

    def append(self, term: int, *commands: bytes, kind: EntryKind = EntryKind.NORMAL) -> None:
        first = self.log.last_index() + 1
        self.log.append([LogEntry(term, first + i, kind, c) for i, c in enumerate(commands)])


def violation(checker: InvariantChecker, node: FakeNode, actions=()) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as info:
        checker.observe(node, list(actions))
    return info.value


def apply(index: int, term: int, command: bytes) -> Action.Apply:
    return Action.Apply(index, term, command)


def test_a_healthy_history_passes_and_violations_name_seed_and_step():
    checker = InvariantChecker(seed=42)
    a, b = FakeNode(1, role=Role.LEADER, term=1), FakeNode(2, term=1)
    a.append(1, b"", kind=EntryKind.NOOP)
    a.append(1, b"x")
    checker.observe(a, [])
    b.append(1, b"", kind=EntryKind.NOOP)
    b.append(1, b"x")
    b.commit_index = b.last_applied = 2
    checker.observe(b, [apply(2, 1, b"x")])
    a.commit_index = a.last_applied = 2
    checker.observe(a, [apply(2, 1, b"x")])
    c = FakeNode(3, term=1)
    c.term = 1
    c.role = Role.LEADER
    error = violation(checker, c)
    assert error.invariant == "election safety"
    assert "seed 42" in str(error) and "step 4" in str(error)


def test_two_leaders_in_one_term():
    checker = InvariantChecker()
    checker.observe(FakeNode(1, role=Role.LEADER, term=3), [])
    checker.observe(FakeNode(2, role=Role.LEADER, term=4), [])
    error = violation(checker, FakeNode(3, role=Role.LEADER, term=3))
    assert error.invariant == "election safety" and "term 3" in str(error)


def test_divergent_applies():
    checker = InvariantChecker()
    a, b = FakeNode(1, term=2), FakeNode(2, term=2)
    a.append(1, b"x")
    b.append(2, b"y")  # a different entry at index 1, from another term
    a.commit_index = a.last_applied = b.commit_index = b.last_applied = 1
    checker.observe(a, [apply(1, 1, b"x")])
    assert violation(checker, b, [apply(1, 2, b"y")]).invariant == "state machine safety"


def test_divergent_snapshots():
    checker = InvariantChecker()
    checker.snapshot_taken(1, 5, b"state-a")
    with pytest.raises(InvariantViolation, match="snapshots at index 5 differ"):
        checker.snapshot_taken(2, 5, b"state-b")


def test_restore_conflicting_with_an_apply():
    checker = InvariantChecker()
    a, b = FakeNode(1, term=2), FakeNode(2, term=3)
    a.append(2, b"x")
    a.commit_index = a.last_applied = 1
    checker.observe(a, [apply(1, 2, b"x")])
    b.commit_index = b.last_applied = 1
    error = violation(checker, b, [Action.RestoreSnapshot(1, 3, b"data")])
    assert error.invariant == "state machine safety"


def test_a_gap_in_applies():
    checker = InvariantChecker()
    node = FakeNode(1, term=1)
    node.append(1, b"a", b"b", b"c")
    node.commit_index = node.last_applied = 3
    error = violation(checker, node, [apply(1, 1, b"a"), apply(3, 1, b"c")])
    assert error.invariant == "apply order" and "index 2" in str(error)


def test_a_normal_entry_applied_silently():
    checker = InvariantChecker()
    node = FakeNode(1, term=1)
    node.append(1, b"", kind=EntryKind.NOOP)
    node.append(1, b"a")
    node.commit_index = node.last_applied = 2  # claims to have applied 2 without an Apply
    assert violation(checker, node).invariant == "apply order"


def test_a_repeated_apply():
    checker = InvariantChecker()
    node = FakeNode(1, term=1)
    node.append(1, b"a", b"b")
    node.commit_index = node.last_applied = 1
    checker.observe(node, [apply(1, 1, b"a")])
    assert violation(checker, node, [apply(1, 1, b"a")]).invariant == "apply order"


def test_a_restarted_node_replays_from_its_snapshot():
    checker = InvariantChecker()
    node = FakeNode(1, term=1)
    node.append(1, b"a", b"b")
    node.commit_index = node.last_applied = 2
    checker.observe(node, [apply(1, 1, b"a"), apply(2, 1, b"b")])
    checker.crashed(1)
    restarted = FakeNode(1, log=node.log, term=1)  # no snapshot: replays from index 1
    checker.started(restarted)
    restarted.commit_index = restarted.last_applied = 2
    checker.observe(restarted, [apply(1, 1, b"a"), apply(2, 1, b"b")])
    restarted.commit_index = restarted.last_applied = 3
    restarted.append(1, b"c")
    assert violation(checker, restarted).invariant == "apply order"


def test_a_log_matching_breach():
    checker = InvariantChecker()
    a, b = FakeNode(1, term=3), FakeNode(2, term=3)
    a.append(1, b"a")
    a.append(3, b"c")
    b.append(2, b"b")
    b.append(3, b"c")  # (index 2, term 3) again, but after a different entry
    checker.observe(a, [])
    error = violation(checker, b)
    assert error.invariant == "log matching" and "index 2, term 3" in str(error)


def test_a_leader_truncating_its_own_log():
    checker = InvariantChecker()
    leader = FakeNode(1, role=Role.LEADER, term=2)
    leader.append(2, b"a", b"b", b"c")
    checker.observe(leader, [])
    leader.log.truncate(3)
    assert violation(checker, leader).invariant == "leader append-only"


def test_a_leader_rewriting_its_last_entry():
    checker = InvariantChecker()
    leader = FakeNode(1, role=Role.LEADER, term=2)
    leader.append(2, b"a", b"b")
    checker.observe(leader, [])
    leader.log.truncate(2)
    leader.append(2, b"z", b"more")
    assert violation(checker, leader).invariant == "leader append-only"


def test_a_leader_missing_a_committed_entry():
    checker = InvariantChecker()
    a = FakeNode(1, role=Role.LEADER, term=1)
    a.append(1, b"x", b"y")
    a.commit_index = 2
    checker.observe(a, [])
    b = FakeNode(2, term=2)
    b.append(1, b"x")
    checker.observe(b, [])
    b.role = Role.LEADER
    error = violation(checker, b)
    assert error.invariant == "leader completeness" and "entry 2" in str(error)


def test_a_send_before_sync():
    checker = InvariantChecker()
    node = FakeNode(1, log=SimLog(), term=1)
    node.append(1, b"x")  # not synced
    heartbeat = AppendEntries(1, 1, 0, 0, [], 0)
    assert violation(checker, node, [Action.Send(2, heartbeat)]).invariant == "durability"
    node.log.sync()
    checker.observe(node, [Action.Send(2, heartbeat)])


def test_a_stale_read():
    checker = InvariantChecker()
    node = FakeNode(1, role=Role.LEADER, term=1)
    node.append(1, b"x")
    node.commit_index = node.last_applied = 1
    checker.observe(node, [apply(1, 1, b"x")])
    checker.read_issued("r")
    error = violation(checker, node, [Action.ReadReady("r", 0)])
    assert error.invariant == "read linearizability"


def test_a_lying_disk_is_caught():
    """A log whose sync() persists nothing (and says it did): crashes then cost nodes their
    votes and entries, and the checker must notice the damage, not just the durability rule."""

    class LyingLog(SimLog):
        __slots__ = ()
        pending = 0

        def sync(self) -> None:
            self._pending.clear()  # drop the writes instead of persisting them

    def factory(node_id, previous):
        return LyingLog() if previous is None else previous.crash()

    faults = Faults(crash=0.08, restart=0.3)
    for seed in range(40):
        cluster = Cluster(3, seed, pre_vote=False, election_timeout=(4, 8), heartbeat_interval=1,
                          log_factory=factory, faults=faults)  # fmt: skip
        try:
            cluster.run(300, chaos=True)
        except InvariantViolation as error:
            assert error.invariant != "durability"
            return
    pytest.fail("40 seeds of amnesiac nodes went unnoticed")


def test_an_apply_that_is_not_the_logged_entry():
    checker = InvariantChecker()
    node = FakeNode(1, term=1)
    node.append(1, Membership.of([1, 2]).encode(), kind=EntryKind.CONFIG)
    node.commit_index = node.last_applied = 1
    error = violation(checker, node, [apply(1, 1, Membership.of([1, 2]).encode())])
    assert error.invariant == "state machine safety"
