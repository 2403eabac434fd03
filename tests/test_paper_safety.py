"""Safety (Raft paper §5.4): the election restriction and the current-term commit rule."""

from __future__ import annotations

import pytest

from raftfast import (
    AppendEntries,
    AppendEntriesReply,
    Event,
    PreVote,
    PreVoteReply,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteReply,
    Role,
    TimeoutNow,
)
from raftharness import Network, log_terms, log_with_terms, make_leader, node_alone, sends


def msg(m):
    return Event.Message(m)


UP_TO_DATE = [
    # (voter's log terms, candidate last term, candidate last index, granted) - etcd TestVoter
    ([1], 1, 1, True),  # same last entry
    ([1], 1, 2, True),  # same last term, longer
    ([1, 1], 1, 1, False),  # same last term, shorter
    ([1], 2, 1, True),  # later last term wins whatever the length
    ([1], 2, 2, True),
    ([1, 1], 2, 1, True),
    ([2], 1, 1, False),  # earlier last term loses whatever the length
    ([2], 1, 2, False),
    ([2, 2], 1, 5, False),
    ([], 0, 0, True),
    ([1], 0, 0, False),  # an empty log is behind any non-empty one
]


@pytest.mark.parametrize("terms,last_term,last_index,granted", UP_TO_DATE)
def test_vote_denied_to_a_less_up_to_date_candidate(terms, last_term, last_index, granted):
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    candidate": the log whose last entry has the later term is more up-to-date; with equal last
    terms, the longer log is. (etcd TestVoter)"""
    node = RaftNode(RaftConfig(1, [2, 3]), log_with_terms(terms, hard_term=2))
    out = node.step(msg(RequestVote(3, 2, last_index, last_term, force=True)))
    assert sends(out, RequestVoteReply) == [RequestVoteReply(3, granted, 1)]
    assert node.term == 3  # the term is adopted whatever the vote
    assert node.voted_for == (2 if granted else None)


@pytest.mark.parametrize("terms,last_term,last_index,granted", UP_TO_DATE)
def test_pre_vote_applies_the_same_restriction(terms, last_term, last_index, granted):
    """thesis §9.6: a pre-vote is granted exactly when the real vote would be (§5.4.1), and it
    changes neither the voter's term nor its vote."""
    node = RaftNode(RaftConfig(1, [2, 3]), log_with_terms(terms, hard_term=2))
    out = node.step(msg(PreVote(3, 2, last_index, last_term)))
    [reply] = sends(out, PreVoteReply)
    assert reply.vote_granted is granted
    assert node.term == 2 and node.voted_for is None


def test_a_lagging_node_cannot_win_an_election():
    """§5.4.1: "a candidate must contact a majority of the cluster in order to be elected, which
    means that every committed entry must be present in at least one of those servers": a node
    that missed committed entries is refused by every node that has them, so it never wins."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    net.partition([1, 2, 3], [4, 5])
    net.propose(1, b"committed")
    net.deliver_all()
    assert net[1].commit_index == 2
    net.crash(1)
    net.heal()
    for _ in range(3):
        net.send(4, TimeoutNow(net[4].term, 1))
        net.deliver_all()
        assert net[4].role is not Role.LEADER
    assert net[4].term > 1  # it did campaign, and lost
    net.elect(2, force=True)
    net.heartbeat(2)
    assert all(net.applied[i] == [b"committed"] for i in (2, 3, 4, 5))


def test_leader_commits_earlier_term_entries_only_through_its_own():
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only log
    entries from the leader's current term are committed by counting replicas."
    (etcd TestLeaderOnlyCommitsLogFromCurrentTerm)"""
    for acked, expected_commit in ((1, 0), (2, 0), (3, 3)):
        node = node_alone(1, [1, 2, 3], log=log_with_terms([1, 2], hard_term=2))
        make_leader(node, [2])
        assert node.term == 3 and node.log.last_index() == 3  # the no-op
        node.step(msg(AppendEntriesReply(3, True, 2, acked)))
        assert node.commit_index == expected_commit


def _figure8_until_c(deliver_term3_entry: bool):
    """Figure 8 (a)-(c) on five nodes, one index later than the figure because of the first
    leader's no-op. Returns the network with S1 leader of term 3."""
    net = Network([1, 2, 3, 4, 5], max_batch=1)
    net.elect(1)
    net.heartbeat(1)  # the no-op (index 1) is committed everywhere
    # (a) S1 (the figure's term-2 leader; here term 1) replicates index 2 to S2 only, crashes.
    net.propose(1, b"x")
    net.take(lambda f, t, m: type(m) is AppendEntries and t != 2)
    net.deliver_all()
    assert [log_terms(net[i].log) for i in (1, 2, 3)] == [[1, 1], [1, 1], [1]]
    assert net[1].commit_index == 1
    net.crash(1)
    # (b) S5 is elected for term 2 by S3, S4 and itself (S2 refuses: it holds index 2), appends
    # its no-op at index 2, and crashes before replicating it.
    net.drop_filter = lambda f, t, m: f == 5 and type(m) is AppendEntries
    _force_elect(net, 5)
    net.drop_filter = None
    assert net[5].term == 2 and log_terms(net[5].log) == [1, 2]
    net.crash(5)
    # (c) S1 restarts and is elected for term 3 by S2, S3 and S4; it replicates index 2
    # (term 1) to S3 and S4, so that entry is on a majority. Unless told otherwise, every
    # message that would hand a follower S1's own term-3 entry (index 3) is lost.
    net.restart(1)
    if not deliver_term3_entry:
        net.drop_filter = lambda f, t, m: (
            type(m) is AppendEntries
            and net[t].log.last_index() >= 2  # the follower could accept it
            and any(e.index >= 3 for e in m.entries)
        )
    _force_elect(net, 1)
    assert net[1].term == 3
    net.heartbeat(1)
    return net


def _force_elect(net, node_id):
    for _ in range(4):
        net.send(node_id, TimeoutNow(net[node_id].term, node_id))
        net.deliver_all()
        if net[node_id].role is Role.LEADER:
            return
    raise AssertionError(f"node {node_id} never won: {net[node_id]!r}")


def test_figure_8_a_leader_never_commits_an_earlier_term_entry_by_counting_replicas():
    """§5.4.2, Figure 8: in (c) the term-2 entry at index 2 is stored on a majority (S1, S2,
    S3), yet S1, leader of term 4 in the figure, must not count it committed: in (d) S5 is
    elected and overwrites it everywhere. Here S1's own-term entry never reaches a follower,
    so S1 may not commit index 2, and no node ever applies it."""
    net = _figure8_until_c(deliver_term3_entry=False)
    holders = [i for i in (1, 2, 3, 4) if net[i].log.term_at(2) == 1]
    assert holders == [1, 2, 3, 4]  # a majority of five holds the old entry,
    assert net[1].progress(3).match == net[1].progress(4).match == 2  # and S1 knows it...
    assert net[1].commit_index < 2  # ...and still it is not committed
    assert all(b"x" not in net.applied[i] for i in net.ids)
    # (d) S1 crashes; S5 restarts, wins with S2, S3 and S4 (its last term, 2, beats their 1)
    # and replaces index 2 everywhere: the old entry was rightly never committed.
    net.drop_filter = None
    net.crash(1)
    net.restart(5)
    _force_elect(net, 5)
    net.heartbeat(5)
    for i in (2, 3, 4, 5):
        assert net[i].log.term_at(2) == 2
        assert b"x" not in net.applied[i]
        assert net[i].commit_index == net[5].log.last_index()


def test_figure_8_once_the_leaders_own_entry_commits_the_old_one_is_safe():
    """§5.4.2, Figure 8 (e): if S1 replicates an entry from its current term on a majority
    before crashing, that entry and the earlier-term one before it are committed, and S5 can no
    longer win an election."""
    net = _figure8_until_c(deliver_term3_entry=True)
    assert net[1].commit_index == 3 and net[1].log.term_at(3) == 3
    assert net.applied[1] == [b"x"]
    net.crash(1)
    net.restart(5)
    for _ in range(4):
        net.send(5, TimeoutNow(net[5].term, 5))
        net.deliver_all()
        assert net[5].role is not Role.LEADER
    _force_elect(net, 2)
    net.heartbeat(2)
    for i in (2, 3, 4, 5):
        assert net.applied[i] == [b"x"]
