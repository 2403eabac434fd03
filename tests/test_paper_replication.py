"""Log replication (Raft paper §5.3), in the style of etcd's raft_paper_test.go."""

from __future__ import annotations

import pytest

from raftfast import (
    Action,
    AppendEntries,
    AppendEntriesReply,
    EntryKind,
    Event,
    LogEntry,
    MemoryLog,
    RaftError,
)
from raftharness import (
    Network,
    ack_all,
    entry,
    log_terms,
    log_with_terms,
    make_leader,
    node_alone,
    of_type,
    send_pairs,
    sends,
)


def msg(m):
    return Event.Message(m)


def lone_leader(size=3, log=None, granting=None, **kwargs):
    """Node 1 of {1..size}, leader by votes from `granting` (default: just enough), with its
    no-op acknowledged by everyone so each peer is in steady replication."""
    node = node_alone(1, range(1, size + 1), log=log, **kwargs)
    peers = list(range(2, size + 1))
    out = make_leader(node, granting if granting is not None else peers[: size // 2])
    ack_all(node, out)
    return node


# ---------------------------------------------------------------- the leader's side


def test_leader_replicates_a_proposal_with_prev_index_and_term():
    """§5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers"; each carries the index and
    term of the entry immediately preceding the new one. (etcd TestLeaderStartReplication)"""
    node = lone_leader(3, log=log_with_terms([1, 1, 2], hard_term=2))
    last, term = node.log.last_index(), node.term
    prev_term = node.log.term_at(last)
    out = node.step(Event.Propose(b"some data"))
    assert node.log.last_index() == last + 1
    assert node.log.entry(last + 1) == LogEntry(term, last + 1, EntryKind.NORMAL, b"some data")
    pairs = send_pairs(out, AppendEntries)
    assert [to for to, _ in pairs] == [2, 3]
    for _, m in pairs:
        assert m == AppendEntries(term, 1, last, prev_term, [LogEntry(term, last + 1, EntryKind.NORMAL, b"some data")], node.commit_index)
    assert node.commit_index == last  # not yet: no follower has it


@pytest.mark.parametrize(
    "size,acks,commits",
    [
        (1, [], True),
        (3, [], False),
        (3, [2], True),
        (3, [2, 3], True),
        (5, [], False),
        (5, [2], False),
        (5, [2, 3], True),
        (5, [2, 3, 4], True),
        (5, [2, 3, 4, 5], True),
    ],
)
def test_leader_commits_once_a_majority_holds_the_entry(size, acks, commits):
    """§5.3: "A log entry is committed once the leader that created the entry has replicated it
    on a majority of the servers." (etcd TestLeaderAcknowledgeCommit)"""
    node = node_alone(1, range(1, size + 1))
    out = make_leader(node, list(range(2, size // 2 + 2)))
    ack_all(node, out)  # the no-op
    noop_commit = node.commit_index
    out = node.step(Event.Propose(b"x"))
    index = node.log.last_index()
    if size == 1:
        assert node.commit_index == index
        assert of_type(out, Action.Apply) == [Action.Apply(index, node.term, b"x")]
        return
    assert node.commit_index == noop_commit
    applied = ack_all(node, out, peers=acks)
    assert (node.commit_index == index) is commits
    assert bool(of_type(applied, Action.Apply)) is commits


def test_leader_commit_is_broadcast_to_followers():
    """§5.3: "The leader keeps track of the highest index it knows to be committed, and it
    includes that index in future AppendEntries RPCs (including heartbeats)."
    (etcd TestLeaderCommitEntry)"""
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    net.propose(1, b"b")
    net.deliver_all()
    assert net[1].commit_index == 3
    assert net[2].commit_index < 3  # followers learn it with the next message
    net.clear_actions()
    net.tick(1, net.configs[1].heartbeat_interval)
    assert all(m.leader_commit == 3 for m in sends(net.actions[1], AppendEntries))
    net.deliver_all()
    assert net[2].commit_index == net[3].commit_index == 3
    assert net.applied[2] == net.applied[3] == [b"a", b"b"]


def test_leader_commits_preceding_entries():
    """§5.3: committing an entry "also commits all preceding entries in the leader's log,
    including entries created by previous leaders." (etcd TestLeaderCommitPrecedingEntries)"""
    for terms in ([], [2], [1, 1], [1, 2, 2]):
        log = log_with_terms(terms, hard_term=2)
        node = node_alone(1, [1, 2, 3], log=log)
        make_leader(node, [2])
        assert node.term == 3
        node.step(Event.Propose(b"new"))
        last = node.log.last_index()
        assert last == len(terms) + 2  # old entries, the no-op, the proposal
        assert node.commit_index == 0
        out = node.step(msg(AppendEntriesReply(3, True, 2, last)))
        assert node.commit_index == last
        expected = [(e.index, e.term, e.command) for e in log.entries(1, len(terms))]
        expected.append((last, 3, b"new"))
        assert [(a.index, a.term, a.command) for a in of_type(out, Action.Apply)] == expected


# ---------------------------------------------------------------- the follower's side


def test_follower_commits_and_applies_in_log_order():
    """§5.3: "Once a follower learns that a log entry is committed, it applies the entry to its
    local state machine (in log order)." (etcd TestFollowerCommitEntry)"""
    node = node_alone(1, [1, 2, 3])
    ents = [entry(1, 1, b"a"), entry(1, 2, b"b"), entry(1, 3, b"c")]
    out = node.step(msg(AppendEntries(1, 2, 0, 0, ents, 2)))
    assert node.commit_index == 2
    assert of_type(out, Action.Apply) == [Action.Apply(1, 1, b"a"), Action.Apply(2, 1, b"b")]
    out = node.step(msg(AppendEntries(1, 2, 3, 1, [], 3)))
    assert of_type(out, Action.Apply) == [Action.Apply(3, 1, b"c")]
    assert node.last_applied == 3


def test_follower_commit_is_capped_by_the_last_new_entry():
    """§5.3 / Figure 2: "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit,
    index of last new entry)": a heartbeat for prev 1 must not commit our unverified entry 2."""
    node = node_alone(1, [1, 2, 3])
    node.step(msg(AppendEntries(1, 2, 0, 0, [entry(1, 1), entry(1, 2)], 0)))
    node.step(msg(AppendEntries(1, 2, 1, 1, [], 5)))
    assert node.commit_index == 1


def test_followers_apply_the_same_commands_in_the_same_order():
    """§5.3 / state machine safety: every node applies the same commands, each once, in
    index order, even when many are in flight at once."""
    net = Network([1, 2, 3, 4, 5], max_batch=3)
    net.elect(2)
    commands = [f"cmd{i}".encode() for i in range(40)]
    for i, c in enumerate(commands):
        net.propose(2, c)
        if i % 7 == 0:
            net.deliver_one_round()
    net.deliver_all()
    net.heartbeat(2)
    for i in net.ids:
        assert net.applied[i] == commands
        indexes = [idx for idx, _, _ in net.applied_entries[i]]
        assert indexes == sorted(set(indexes))


CHECK = [
    # (prev index, prev term, success, match_index, hint) on a follower holding terms [1, 2]
    # with commit 1 - etcd TestFollowerCheckMsgApp
    (0, 0, True, 1, None),  # below our commit: already known to match
    (1, 1, True, 1, None),
    (2, 2, True, 2, None),
    (2, 1, False, 2, (1, 1)),  # term mismatch at 2: our entry for term <= 1 is at 1
    (3, 3, False, 3, (2, 2)),  # beyond our log: our last entry is the best guess
    (3, 1, False, 3, (1, 1)),
]


@pytest.mark.parametrize("prev,prev_term,success,match,hint", CHECK)
def test_follower_checks_prev_index_and_term(prev, prev_term, success, match, hint):
    """§5.3: "If the follower does not find an entry in its log with the same index and term,
    then it refuses the new entries." The refusal names the rejected prev index and a conflict
    hint (etcd's findConflictByTerm) so the leader can skip a whole term at once."""
    node = node_alone(1, [1, 2, 3], log=log_with_terms([1, 2], hard_term=2))
    node.step(msg(AppendEntries(2, 2, 1, 1, [], 1)))
    assert node.commit_index == 1
    out = node.step(msg(AppendEntries(2, 2, prev, prev_term, [], 1)))
    [reply] = sends(out, AppendEntriesReply)
    assert reply.success is success and reply.match_index == match and reply.term == 2
    if hint is not None:
        assert (reply.conflict_index, reply.conflict_term) == hint
    assert log_terms(node.log) == [1, 2]


APPEND = [
    # (prev, prev term, entries as (term, index), resulting terms) on a follower holding [1, 2]
    # - etcd TestFollowerAppendEntries
    (2, 2, [(3, 3)], [1, 2, 3]),
    (1, 1, [(3, 2), (4, 3)], [1, 3, 4]),
    (0, 0, [(1, 1)], [1, 2]),
    (0, 0, [(3, 1)], [3]),
    (1, 1, [(2, 2)], [1, 2]),
    (1, 1, [(2, 2), (5, 3)], [1, 2, 5]),
]


@pytest.mark.parametrize("prev,prev_term,ents,terms", APPEND)
def test_follower_truncates_conflicting_entries(prev, prev_term, ents, terms):
    """§5.3: "If an existing entry conflicts with a new one (same index but different terms),
    delete the existing entry and all that follow it"; entries that already match are kept
    (a delayed, shorter AppendEntries must not truncate anything). Figure 2 rule 3-4."""
    node = node_alone(1, [1, 2, 3], log=log_with_terms([1, 2], hard_term=2))
    new = [entry(t, i) for t, i in ents]
    out = node.step(msg(AppendEntries(5, 2, prev, prev_term, new, 0)))
    assert log_terms(node.log) == terms
    assert sends(out, AppendEntriesReply) == [AppendEntriesReply(5, True, 1, prev + len(new))]
    for e in new:
        assert node.log.entry(e.index) == e


def test_follower_never_truncates_committed_entries():
    """§5.4 (Leader Completeness): a committed entry is never overwritten. An AppendEntries that
    would replace one (only a buggy or byzantine leader sends it) is refused - an error or an
    answer that everything through our commit index matches - never applied."""
    node = node_alone(1, [1, 2, 3])
    node.step(msg(AppendEntries(1, 2, 0, 0, [entry(1, 1), entry(1, 2)], 2)))
    assert node.commit_index == 2
    try:
        out = node.step(msg(AppendEntries(2, 3, 1, 1, [entry(2, 2)], 2)))
    except RaftError:
        pass
    else:
        assert sends(out, AppendEntriesReply) == [AppendEntriesReply(2, True, 1, 2)]
    assert log_terms(node.log) == [1, 1]
    assert node.log.entry(2) == entry(1, 2)


# ---------------------------------------------------------------- Figure 7

LEADER_7 = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7 = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIGURE_7))
def test_leader_repairs_each_follower_log_of_figure_7(case):
    """§5.3, Figure 7: whatever a follower's log looks like - missing entries (a, b), extra
    uncommitted entries (c, d), or both (e, f) - the term-8 leader brings it to exactly its own
    log by finding the latest point where they agree, deleting the follower's entries after
    it, and sending its own. (etcd TestLeaderSyncFollowerLog)

    Node 3 starts empty and grants the leader its vote; with the conflict hint the leader needs
    at most one refusal per follower (§5.3's "optimization" paragraph)."""
    logs = {
        1: log_with_terms(LEADER_7, hard_term=7),
        2: log_with_terms(FIGURE_7[case], hard_term=7),
        3: log_with_terms([], hard_term=7),
    }
    net = Network([1, 2, 3], logs=logs)
    net.elect(1)
    assert net[1].term == 8
    net.propose(1, b"term 8 entry")
    net.deliver_all()
    net.heartbeat(1)
    expected = net[1].log.entries(1, net[1].log.last_index())
    assert log_terms(net[1].log) == LEADER_7 + [8, 8]
    for i in (2, 3):
        assert net[i].log.entries(1, net[i].log.last_index()) == expected
        assert net[i].commit_index == len(expected)
    refusals = [
        a.message
        for a in net.actions[2]
        if type(a) is Action.Send and type(a.message) is AppendEntriesReply and not a.message.success
    ]
    assert len(refusals) <= 1


def test_leader_backs_up_one_index_per_round_trip_without_a_hint():
    """§5.3: "After a rejection, the leader decrements nextIndex and retries": with the hint
    reduced to the paper's basic algorithm (try the index just below), the leader still
    converges on Figure 7's worst log, one index per round trip."""
    log = log_with_terms(LEADER_7, hard_term=8)
    node = node_alone(1, [1, 2, 3], log=log)
    out = make_leader(node, [3])
    follower = node_alone(2, [1, 2, 3], log=log_with_terms(FIGURE_7["f"], hard_term=7))
    pending = [m for to, m in send_pairs(out, AppendEntries) if to == 2]
    rounds = 0
    while pending and rounds < 50:
        rounds += 1
        replies = []
        for m in pending:
            replies += sends(follower.step(msg(m)), AppendEntriesReply)
        pending = []
        for r in replies:
            if not r.success:
                # the paper's basic algorithm: no term hint, just "try one lower"
                r = AppendEntriesReply(r.term, False, r.from_, r.match_index, r.match_index - 1, 0)
            pending += [m for to, m in send_pairs(node.step(msg(r)), AppendEntries) if to == 2]
    assert follower.log.entries(1, follower.log.last_index()) == node.log.entries(1, node.log.last_index())
    # prev 10, 9, ..., 4 refused; the probe at prev 3 matches and carries the whole tail
    assert rounds == 8


# ---------------------------------------------------------------- flow control


def test_pipelining_is_bounded_by_max_inflight():
    """§5.3 "the leader ... issues AppendEntries RPCs in parallel": in steady state the leader
    pipelines, but never more than `max_inflight` unacknowledged messages per follower."""
    node = lone_leader(3, max_batch=1, max_inflight=2)
    out = []
    for i in range(5):
        out += node.step(Event.Propose(b"%d" % i))
    to2 = [m for to, m in send_pairs(out, AppendEntries) if to == 2]
    assert len(to2) == 2
    assert [m.prev_log_index for m in to2] == [1, 2]
    more = ack_all(node, [Action.Send(2, to2[0])])
    assert [m.prev_log_index for to, m in send_pairs(more, AppendEntries) if to == 2] == [3]


def test_byte_limit_still_sends_an_oversized_entry():
    """§5.3 flow control: the per-message byte limit never starves an entry larger than it."""
    node = lone_leader(3, max_batch_bytes=10)
    out = node.step(Event.Propose(b"x" * 100))
    out += node.step(Event.Propose(b"y"))
    to2 = [m for to, m in send_pairs(out, AppendEntries) if to == 2]
    assert [len(m.entries) for m in to2] == [1, 1]
    assert to2[0].entries[0].command == b"x" * 100


@pytest.mark.parametrize("pattern", ["every_third", "bursts", "replies", "duplicates_reordered"])
def test_leader_retries_until_every_follower_stores_every_entry(pattern):
    """§5.3: "If followers crash or run slowly, or if network packets are lost, the leader
    retries AppendEntries RPCs indefinitely until all followers eventually store all log
    entries." Lossy, duplicating and reordering deliveries, with pipelining and small batches,
    still converge to identical logs and identical applied sequences."""
    net = Network([1, 2, 3], max_batch=2, max_inflight=3)
    net.elect(1)
    counter = {"n": 0}

    def lossy(f, t, m):
        counter["n"] += 1
        n = counter["n"]
        if pattern == "every_third":
            return type(m) is AppendEntries and n % 3 == 0
        if pattern == "bursts":
            return type(m) is AppendEntries and (n // 7) % 2 == 0
        if pattern == "replies":
            return type(m) is AppendEntriesReply and n % 2 == 0
        return False

    net.drop_filter = lossy
    commands = [b"c%d" % i for i in range(30)]
    for i, c in enumerate(commands):
        net.propose(1, c)
        if pattern == "duplicates_reordered" and net.queue:
            # duplicate the oldest message in flight and deliver the newest first
            net.queue.append(net.queue[0])
            net.deliver(net.queue.pop())
        if i % 4 == 3:
            net.deliver_one_round()
    for _ in range(30):
        net.tick(1)
        net.deliver_all()
    net.drop_filter = None
    for _ in range(10):
        net.heartbeat(1)
    leader_log = net[1].log.entries(1, net[1].log.last_index())
    for i in (2, 3):
        assert net[i].log.entries(1, net[i].log.last_index()) == leader_log
        assert net.applied[i] == commands
    assert net.applied[1] == commands
    assert net.leaders() == [1]


# ---------------------------------------------------------------- the leader's own disk (thesis §10.2.1)


class _LaggingLog(MemoryLog):
    """A MemoryLog whose sync() only starts the write: `durable` is what a test says reached
    the disk (as a runtime's fsync worker would report it)."""

    def __init__(self) -> None:
        super().__init__()
        self.durable = 0

    def durable_index(self) -> int:
        return self.durable


@pytest.mark.parametrize("size", [3, 5])
def test_leader_counts_itself_only_up_to_its_durable_index(size):
    """Thesis §10.2.1: the leader may send entries before its own disk has them, in parallel
    with its fsync, "as long as it does not count itself toward the majority until they are
    durable". With its own write pending, a bare majority that needs the leader's vote must
    not commit; the followers alone, or the leader once durable, may."""
    log = _LaggingLog()
    node = node_alone(1, range(1, size + 1), log=log)
    peers = list(range(2, size + 1))
    out = make_leader(node, peers[: size // 2])
    log.durable = log.last_index()
    ack_all(node, out)  # the no-op, durable everywhere
    base = node.commit_index
    assert base == log.last_index()

    out = node.step(Event.Propose(b"x"))
    index = log.last_index()
    assert sends(out, AppendEntries), "replication does not wait for the leader's own fsync"
    majority_with_leader = peers[: size // 2]  # with the leader, a majority; alone, one short
    applied = ack_all(node, out, peers=majority_with_leader)
    assert node.commit_index == base and not of_type(applied, Action.Apply)

    # the leader's fsync completes: the next step (any step, even an empty one) counts it
    log.durable = index
    applied = node.step_many([])
    assert node.commit_index == index
    assert of_type(applied, Action.Apply) == [Action.Apply(index, node.term, b"x")]

    # without the leader: a majority of followers commits on its own
    out = node.step(Event.Propose(b"y"))
    applied = ack_all(node, out, peers=peers[: size // 2 + 1])
    assert node.commit_index == log.last_index() > log.durable
    assert of_type(applied, Action.Apply) == [Action.Apply(log.last_index(), node.term, b"y")]
