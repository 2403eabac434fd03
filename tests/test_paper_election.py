"""Leader election (Raft paper §5.1-§5.2), in the style of etcd's raft_paper_test.go.

Most tests drive a lone node by hand (its peers exist only as ids) so they can assert on exactly
what it sends; the one-round election tests also run whole clusters through `raftharness`.
"""

from __future__ import annotations

import pytest

from raftfast import (
    AppendEntries,
    AppendEntriesReply,
    Event,
    HardState,
    InstallSnapshot,
    Membership,
    MemoryLog,
    PreVote,
    PreVoteReply,
    RaftConfig,
    RaftNode,
    ReadProbe,
    RequestVote,
    RequestVoteReply,
    Role,
    Snapshot,
    TimeoutNow,
)
from raftharness import Network, entry, log_with_terms, make_leader, node_alone, send_pairs, sends


def msg(m):
    return Event.Message(m)


def campaign(node):
    """Tick a lone node until it campaigns; returns the actions of that tick."""
    for _ in range(2 * node.config.election_timeout[1]):
        out = node.step(Event.Tick())
        if node.role is not Role.FOLLOWER or sends(out):
            return out
    raise AssertionError("never campaigned")


def make_role(role: str, **kwargs):
    """A lone node 1 of {1, 2, 3} in `role`: follower, precandidate, candidate or leader."""
    if role == "precandidate":
        kwargs["pre_vote"] = True
        node = node_alone(**kwargs)
        term = node.term
        campaign(node)
        assert node.role is Role.CANDIDATE and node.term == term
    elif role == "candidate":
        kwargs["pre_vote"] = False
        node = node_alone(**kwargs)
        term = node.term
        campaign(node)
        assert node.role is Role.CANDIDATE and node.term == term + 1
    elif role == "leader":
        node = node_alone(**kwargs)
        make_leader(node, [2])
        assert node.role is Role.LEADER
    else:
        node = node_alone(**kwargs)
    return node


# ---------------------------------------------------------------- §5.1 terms


def test_node_starts_as_follower():
    """§5.2: "When servers start up, they begin as followers." Also after a restart."""
    node = RaftNode(RaftConfig(1, [2, 3]))
    assert node.role is Role.FOLLOWER
    assert node.term == 0 and node.leader is None and not node.is_leader()
    restarted = RaftNode(RaftConfig(1, [2, 3]), log_with_terms([1, 2, 2], hard_term=4, voted_for=1))
    assert restarted.role is Role.FOLLOWER and restarted.term == 4 and restarted.leader is None


@pytest.mark.parametrize("role", ["follower", "precandidate", "candidate", "leader"])
@pytest.mark.parametrize("kind", ["append", "append_reply", "vote_reply", "forced_vote", "snapshot"])
def test_higher_term_turns_any_role_into_follower(role, kind):
    """§5.1: "If a server's current term is smaller than the other's, it updates its current
    term to the larger value. If a candidate or leader discovers that its term is out of date,
    it immediately reverts to follower state." (etcd TestFollowerUpdateTermFromMessage & co.)"""
    node = make_role(role)
    term = node.term + 2
    if kind == "append":
        m, leader = AppendEntries(term, 2, 0, 0, [], 0), 2
    elif kind == "append_reply":
        m, leader = AppendEntriesReply(term, False, 2, 0), None
    elif kind == "vote_reply":
        m, leader = RequestVoteReply(term, False, 2), None
    elif kind == "forced_vote":
        m, leader = RequestVote(term, 3, 0, 0, force=True), None
    else:
        m, leader = InstallSnapshot(term, 3, Snapshot(0, 0, Membership.of([1, 2, 3]), b"")), 3
    node.step(msg(m))
    assert node.role is Role.FOLLOWER
    assert node.term == term
    assert node.leader == leader
    if kind != "forced_vote":
        assert node.voted_for is None  # a new term starts with no vote
    assert node.log.hard_state().term == term  # persisted before anything is sent


def test_higher_term_vote_request_moves_a_candidate_and_may_win_its_vote():
    """§5.1 + §5.2: a candidate seeing a RequestVote from a later term adopts that term and,
    as a follower of it with no vote cast yet, grants the vote to an up-to-date candidate."""
    node = make_role("candidate")
    out = node.step(msg(RequestVote(5, 3, 0, 0)))
    assert node.role is Role.FOLLOWER and node.term == 5 and node.voted_for == 3
    assert sends(out, RequestVoteReply) == [RequestVoteReply(5, True, 1)]


def _follower_at_term(term=5, **kwargs):
    log = log_with_terms([1, 2], hard_term=term)
    return RaftNode(RaftConfig(1, [2, 3], **kwargs), log)


def test_stale_append_entries_is_rejected_with_our_term():
    """§5.1: "If a server receives a request with a stale term number, it rejects the request."
    The reply carries our term so the stale leader steps down."""
    node = _follower_at_term(5)
    out = node.step(msg(AppendEntries(4, 2, 2, 2, [entry(4, 3)], 2)))
    [reply] = sends(out, AppendEntriesReply)
    assert reply.term == 5 and reply.success is False
    assert node.log.last_index() == 2 and node.commit_index == 0
    assert node.leader is None and node.term == 5


@pytest.mark.parametrize(
    "make,reply_type",
    [
        (lambda: RequestVote(4, 2, 10, 4), RequestVoteReply),
        (lambda: RequestVote(4, 2, 10, 4, force=True), RequestVoteReply),
        (lambda: PreVote(5, 2, 10, 4), PreVoteReply),  # a pre-vote for our own term is stale
    ],
)
def test_stale_vote_requests_are_rejected(make, reply_type):
    """§5.1: a vote request from a stale term is rejected with our term; no vote is cast."""
    node = _follower_at_term(5)
    out = node.step(msg(make()))
    [reply] = sends(out, reply_type)
    assert reply.term == 5 and reply.vote_granted is False
    assert node.voted_for is None and node.term == 5


def test_stale_install_snapshot_and_probes_are_rejected():
    """§5.1 / §7: a stale leader's snapshot is not installed; its read probe is not confirmed."""
    node = _follower_at_term(5)
    out = node.step(msg(InstallSnapshot(4, 2, Snapshot(10, 4, Membership.of([1, 2, 3]), b"s"))))
    assert node.log.snapshot_index() == 0 and node.commit_index == 0
    assert all(r.term == 5 and not r.success for r in sends(out, AppendEntriesReply))
    out = node.step(msg(ReadProbe(4, 2, 1)))
    assert all(r.term == 5 for r in sends(out))
    assert node.leader is None


def test_stale_timeout_now_is_ignored():
    """§5.1: a TimeoutNow from a deposed leader's term must not start an election."""
    node = _follower_at_term(5)
    out = node.step(msg(TimeoutNow(4, 2)))
    assert node.role is Role.FOLLOWER and node.term == 5 and sends(out) == []


def test_stale_replies_are_ignored():
    """§5.1: replies from an older term carry no information for the current one."""
    cand = make_role("candidate")  # term 1
    cand.step(msg(RequestVoteReply(1, False, 2)))  # one real refusal
    cand.step(msg(RequestVoteReply(0, True, 3)))
    assert cand.role is Role.CANDIDATE  # the stale grant did not count

    leader = make_role("leader")
    leader.step(Event.Propose(b"x"))
    commit = leader.commit_index
    out = leader.step(msg(AppendEntriesReply(leader.term - 1, True, 2, 5)))
    assert leader.commit_index == commit and leader.role is Role.LEADER and out == []
    assert leader.progress(2).match == 0


# ---------------------------------------------------------------- §5.2 heartbeats and timeouts


def test_leader_sends_heartbeats():
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries)
    to all followers in order to maintain their authority." (etcd TestLeaderBcastBeat)"""
    net = Network([1, 2, 3])
    net.elect(1)
    net.clear_actions()
    leader = net[1]
    interval = net.configs[1].heartbeat_interval
    assert sends(net.tick(1, interval - 1)) == []
    out = net.tick(1)
    beats = sends(out, AppendEntries)
    assert sorted(to for to, _ in send_pairs(out)) == [2, 3]
    last = leader.log.last_index()
    for m in beats:
        assert m.entries == [] or list(m.entries) == []
        assert m.term == leader.term and m.leader == 1
        assert (m.prev_log_index, m.prev_log_term) == (last, leader.log.term_at(last))
        assert m.leader_commit == leader.commit_index


def test_heartbeats_keep_followers_following():
    """§5.2: "A server remains in follower state as long as it receives valid RPCs from a leader
    or candidate." Ticking everyone for many election timeouts changes nothing."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.tick_all(100)
    assert net.leaders() == [1]
    assert all(net[i].term == 1 and net[i].leader == 1 for i in (1, 2, 3))


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_timeout_starts_an_election(role):
    """§5.2: "If a follower receives no communication over a period of time called the election
    timeout, then it ... begins an election": it increments its term, votes for itself and asks
    every peer for its vote. A candidate that times out starts another election.
    (etcd TestFollowerStartElection / TestCandidateStartNewElection)"""
    node = make_role(role, pre_vote=False, log=log_with_terms([1, 1, 2], hard_term=2))
    term = node.term
    out = campaign(node) if role == "follower" else _next_timeout(node)
    assert node.role is Role.CANDIDATE
    assert node.term == term + 1
    assert node.voted_for == 1 and node.log.hard_state() == HardState(term + 1, 1)
    reqs = sends(out, RequestVote)
    assert sorted(to for to, _ in send_pairs(out)) == [2, 3]
    assert all(r == RequestVote(term + 1, 1, 3, 2, False) for r in reqs)


def _next_timeout(node):
    for _ in range(2 * node.config.election_timeout[1]):
        out = node.step(Event.Tick())
        if sends(out):
            return out
    raise AssertionError("candidate never timed out")


def test_timeout_with_pre_vote_asks_first_without_bumping_the_term():
    """thesis §9.6: with pre-vote, a timed-out follower asks whether it could win, for term+1,
    without changing its own term or vote; a pre-candidate that times out asks again."""
    node = node_alone(log=log_with_terms([1, 1, 2], hard_term=2))
    out = campaign(node)
    assert node.role is Role.CANDIDATE and node.term == 2
    assert node.log.hard_state() == HardState(2, None)
    assert sends(out, PreVote) == [PreVote(3, 1, 3, 2)] * 2
    assert sends(out, RequestVote) == []
    out = _next_timeout(node)
    assert node.term == 2 and sends(out, PreVote) == [PreVote(3, 1, 3, 2)] * 2


ONE_ROUND = [
    # (size, votes: peer -> granted, expected role) - etcd TestLeaderElectionInOneRoundRPC
    (1, {}, Role.LEADER),
    (3, {2: True, 3: True}, Role.LEADER),
    (3, {2: True}, Role.LEADER),
    (5, {2: True, 3: True, 4: True, 5: True}, Role.LEADER),
    (5, {2: True, 3: True, 4: True}, Role.LEADER),
    (5, {2: True, 3: True}, Role.LEADER),
    (3, {2: False, 3: False}, Role.FOLLOWER),
    (5, {2: False, 3: False, 4: False, 5: False}, Role.FOLLOWER),
    (5, {2: True, 3: False, 4: False, 5: False}, Role.FOLLOWER),
    (3, {}, Role.CANDIDATE),
    (5, {2: True}, Role.CANDIDATE),
    (5, {2: False, 3: False}, Role.CANDIDATE),
    (5, {}, Role.CANDIDATE),
]


@pytest.mark.parametrize("size,votes,expected", ONE_ROUND)
def test_election_outcome_after_one_round_of_votes(size, votes, expected):
    """§5.2: a candidate wins once a majority of the cluster granted its vote, reverts to
    follower once a majority refused, and otherwise stays a candidate."""
    node = node_alone(1, range(1, size + 1), pre_vote=False)
    campaign(node)
    for peer, granted in votes.items():
        node.step(msg(RequestVoteReply(1, granted, peer)))
    assert node.role is expected
    assert node.term == 1


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("pre_vote", [True, False])
def test_one_round_election_in_a_cluster(size, pre_vote):
    """§5.2: with every message delivered, one timeout elects a leader that every other node
    then follows, all in term 1 (pre-vote costs a round trip, never a term; thesis §9.6)."""
    ids = list(range(1, size + 1))
    net = Network(ids, pre_vote=pre_vote)
    net.elect(size)  # the highest id: the tie-breaks must not favour node 1
    assert net.leaders() == [size]
    for i in ids:
        assert net[i].term == 1 and net[i].leader == size
    # the leader's no-op committed: §8, and everyone learns it on the next heartbeat
    net.heartbeat(size)
    assert all(net[i].commit_index == 1 for i in ids)


@pytest.mark.parametrize(
    "voted_for,candidate,granted",
    [(None, 2, True), (None, 3, True), (2, 2, True), (2, 3, False), (3, 2, False), (3, 3, True)],
)
def test_follower_votes_at_most_once_per_term(voted_for, candidate, granted):
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." A repeated request from the same candidate is granted
    again (the reply may have been lost). (etcd TestFollowerVote)"""
    log = MemoryLog()
    log.set_hard_state(HardState(1, voted_for))
    node = RaftNode(RaftConfig(1, [2, 3], pre_vote=False), log)
    out = node.step(msg(RequestVote(1, candidate, 0, 0)))
    assert sends(out, RequestVoteReply) == [RequestVoteReply(1, granted, 1)]
    assert node.voted_for == (candidate if granted else voted_for)


def test_vote_is_durable_before_the_reply_and_survives_restart():
    """§5.2 / Figure 2 "persistent state": votedFor is on stable storage before the reply is
    sent, so a restarted node does not vote twice in a term."""
    log = MemoryLog()
    node = RaftNode(RaftConfig(1, [2, 3]), log)
    node.step(msg(RequestVote(1, 2, 0, 0, force=True)))
    assert log.hard_state() == HardState(1, 2)
    again = RaftNode(RaftConfig(1, [2, 3]), log)
    out = again.step(msg(RequestVote(1, 3, 0, 0, force=True)))
    assert sends(out, RequestVoteReply) == [RequestVoteReply(1, False, 1)]


def test_a_new_term_allows_a_new_vote():
    """§5.2: the one-vote limit is per term."""
    node = node_alone(pre_vote=False)
    node.step(msg(RequestVote(1, 2, 0, 0)))
    out = node.step(msg(RequestVote(2, 3, 0, 0)))
    assert sends(out, RequestVoteReply) == [RequestVoteReply(2, True, 1)]
    assert node.voted_for == 3


@pytest.mark.parametrize("role", ["precandidate", "candidate"])
@pytest.mark.parametrize("delta", [0, 1])
def test_candidate_falls_back_on_current_leaders_append_entries(role, delta):
    """§5.2: "If the leader's term ... is at least as large as the candidate's current term,
    then the candidate recognizes the leader as legitimate and returns to follower state."
    (etcd TestCandidateFallback)"""
    node = make_role(role)
    term = node.term + delta
    out = node.step(msg(AppendEntries(term, 3, 0, 0, [], 0)))
    assert node.role is Role.FOLLOWER
    assert node.term == term and node.leader == 3
    assert sends(out, AppendEntriesReply) == [AppendEntriesReply(term, True, 1, 0)]


@pytest.mark.parametrize("pre_vote", [True, False])
def test_election_timeouts_are_randomised_over_their_range(pre_vote):
    """§5.2: "election timeouts are chosen randomly from a fixed interval"; every value of
    [lo, hi) occurs, and nothing outside it, for followers and candidates alike.
    (etcd TestFollowerElectionTimeoutRandomized / TestCandidateElectionTimeoutRandomized)"""
    lo, hi = 10, 20
    seen = set()
    for seed in range(8):
        node = node_alone(election_timeout=(lo, hi), pre_vote=pre_vote, seed=seed)
        elapsed = 0
        for _ in range(40 * hi):
            elapsed += 1
            if sends(node.step(Event.Tick())):
                seen.add(elapsed)
                elapsed = 0
    assert seen == set(range(lo, hi))


def test_different_nodes_draw_different_timeouts():
    """§5.2: randomisation is what spreads the servers out so that usually one times out
    first; with seed=None the seed derives from the id, so peers do not draw in lock-step."""
    firsts = []
    for node_id in range(1, 6):
        node = node_alone(node_id, range(1, 6))
        ticks = 0
        while not sends(node.step(Event.Tick())):
            ticks += 1
        firsts.append(ticks)
    assert len(set(firsts)) > 1


def test_nodes_sharing_an_explicit_seed_still_elect_a_leader():
    """§5.2: randomised timeouts are what break split votes. Nodes configured with the same
    explicit seed must not draw the same timeouts, or they campaign in lockstep forever."""
    from raftfast import Action, Event, RaftConfig, RaftNode, Role

    ids = (1, 2, 3)
    nodes = {i: RaftNode(RaftConfig(i, ids, seed=7)) for i in ids}
    inbox = {i: [] for i in ids}
    for _ in range(300):
        # every node steps in the same round and hears the others only next round: lockstep
        sent = {i: [] for i in ids}
        for i, node in nodes.items():
            events = [Event.Tick()] + [Event.Message(m) for m in inbox[i]]
            for action in node.step_many(events):
                if isinstance(action, Action.Send):
                    sent[action.to].append(action.message)
        inbox = sent
        if any(n.role is Role.LEADER for n in nodes.values()):
            break
    assert sum(n.role is Role.LEADER for n in nodes.values()) == 1
    assert max(n.term for n in nodes.values()) < 10
