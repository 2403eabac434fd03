"""Pre-vote, check-quorum and leader stickiness (thesis §9.6, §6.2, §4.2.3)."""

from __future__ import annotations

from raftfast import (
    AppendEntries,
    Event,
    PreVote,
    PreVoteReply,
    RequestVote,
    RequestVoteReply,
    Role,
)
from raftharness import Network, node_alone, sends


def msg(m):
    return Event.Message(m)


def follower_of_live_leader(**kwargs):
    """Node 1 of {1, 2, 3}, following leader 2 in term 1, having just heard from it."""
    node = node_alone(**kwargs)
    node.step(msg(AppendEntries(1, 2, 0, 0, [], 0)))
    assert node.leader == 2 and node.term == 1
    return node


# ---------------------------------------------------------------- pre-vote (thesis §9.6)


def test_partitioned_node_does_not_inflate_its_term():
    """thesis §9.6: with pre-vote, a node cut off from the cluster keeps timing out but never
    wins a pre-vote, so it never increments its term, however long the partition lasts."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    net.isolate(5)
    for _ in range(200):
        net.step(5, Event.Tick())
        net.deliver_all()
    assert net[5].term == 1
    assert net[5].log.hard_state().term == 1
    assert any(sends(net.actions[5], PreVote))  # it did try


def test_partitioned_node_rejoins_without_disrupting_the_leader():
    """thesis §9.6: "the Pre-Vote algorithm ... prevents a server that was partitioned from
    disrupting the cluster when it rejoins": the leader keeps its term and its role, and the
    rejoining node simply follows it."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    net.isolate(5)
    net.tick_all(100)
    assert net.leaders() == [1]
    net.heal()
    net.propose(1, b"after")
    net.tick_all(40)
    assert net.leaders() == [1]
    assert all(net[i].term == 1 for i in net.ids)
    assert net[5].leader == 1 and net.applied[5] == [b"after"]


def test_without_pre_vote_a_partitioned_node_inflates_its_term():
    """The contrast for the two tests above (thesis §9.6's motivation): with pre-vote off, the
    same isolated node raises its term on every timeout, and on rejoining forces the leader
    out of its term."""
    net = Network([1, 2, 3, 4, 5], pre_vote=False)
    net.elect(1)
    net.isolate(5)
    for _ in range(100):
        net.step(5, Event.Tick())
        net.deliver_all()
    assert net[5].term > 3
    inflated = net[5].term
    net.heal()
    net.tick_all(60)
    # the leader hears of the higher term (in a refusal of its heartbeat) and has to step down
    assert all(net[i].term >= inflated for i in net.ids)
    assert len(net.leaders()) == 1


def test_pre_vote_from_a_lagging_node_fails_and_bumps_no_terms():
    """thesis §9.6 with §5.4.1: a node that missed committed entries asks for pre-votes, is
    refused by the nodes that have them, and no term anywhere changes because of it; the
    up-to-date node then wins the real election."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"x")
    net.deliver_all()
    assert net[1].commit_index == 2 and net[3].log.last_index() == 1
    net.crash(1)
    net.heal()
    net.clear_actions()
    net.timeout(3)  # the lagging node times out first
    assert sends(net.actions[3], PreVote)
    net.deliver_all()
    refusals = [m for m in sends(net.actions[2], PreVoteReply)]
    assert refusals and not any(m.vote_granted for m in refusals)
    assert net[2].term == net[3].term == 1
    assert net[3].role is not Role.LEADER
    # node 2 times out in turn: node 3 grants it (2's log is more up to date), so 2 wins term 2
    net.elect(2)
    assert net[2].term == 2 and net[3].leader == 2


def test_pre_vote_grant_does_not_change_the_voters_term_or_vote():
    """thesis §9.6: a pre-vote is a question, not a vote: granting it records nothing."""
    node = node_alone()
    out = node.step(msg(PreVote(1, 2, 0, 0)))
    assert sends(out, PreVoteReply) == [PreVoteReply(1, True, 1)]
    assert node.term == 0 and node.voted_for is None and node.role is Role.FOLLOWER
    assert node.log.hard_state().term == 0


def test_pre_candidate_needs_a_majority_of_pre_votes_before_raising_its_term():
    """thesis §9.6: "a candidate would first ask other servers whether its log was up-to-date
    enough to get their vote. Only if the candidate believed it could get votes from a majority
    of the cluster would it increment its term and start a normal election.\""""
    node = node_alone(1, [1, 2, 3, 4, 5])
    for _ in range(40):
        if sends(node.step(Event.Tick())):
            break
    assert node.role is Role.CANDIDATE and node.term == 0
    out = node.step(msg(PreVoteReply(1, True, 2)))
    assert node.term == 0 and sends(out, RequestVote) == []
    out = node.step(msg(PreVoteReply(1, True, 3)))
    assert node.term == 1 and node.voted_for == 1
    assert [m.term for m in sends(out, RequestVote)] == [1, 1, 1, 1]


def test_pre_candidate_rejected_by_a_majority_returns_to_follower():
    """thesis §9.6: a pre-vote lost outright ends the attempt; the node's term is untouched."""
    node = node_alone(1, [1, 2, 3])
    for _ in range(40):
        if sends(node.step(Event.Tick())):
            break
    node.step(msg(PreVoteReply(0, False, 2)))
    node.step(msg(PreVoteReply(0, False, 3)))
    assert node.role is Role.FOLLOWER and node.term == 0


# ---------------------------------------------------------------- check-quorum (thesis §6.2)


def test_check_quorum_leader_steps_down_in_a_minority_partition():
    """thesis §6.2: "a leader steps down if an election timeout elapses without a successful
    round of heartbeats to a majority of its cluster", so clients can find the real leader.
    Its term stays; the majority side elects a new leader."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    net.partition([1, 2], [3, 4, 5])
    lo = net.configs[1].election_timeout[0]
    net.tick_all(2 * lo)
    assert net[1].role is Role.FOLLOWER
    assert net[1].term == 1 and net[1].leader is None
    assert net[2].term == 1  # the minority never raised its term either (pre-vote)
    net.tick_all(4 * lo)
    [leader] = net.leaders()
    assert leader in (3, 4, 5) and net[leader].term >= 2


def test_check_quorum_leader_with_a_majority_stays():
    """thesis §6.2: a leader that does hear from a majority each election timeout keeps its
    role, even with a minority of its followers unreachable."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    net.partition([1, 2, 3], [4, 5])
    lo = net.configs[1].election_timeout[0]
    for _ in range(5 * lo):
        for i in (1, 2, 3):
            net.step(i, Event.Tick())
        net.deliver_all()
    assert net.leaders() == [1] and net[1].term == 1


def test_without_check_quorum_a_minority_leader_stays_leader():
    """The contrast for the step-down test: with check_quorum off, nothing deposes a leader cut
    off from the majority (thesis §6.2's motivation)."""
    net = Network([1, 2, 3, 4, 5], check_quorum=False)
    net.elect(1)
    net.partition([1, 2], [3, 4, 5])
    for _ in range(100):
        net.step(1, Event.Tick())
        net.deliver_all()
    assert net[1].role is Role.LEADER


# ---------------------------------------------------------------- leader stickiness (thesis §4.2.3)


def test_vote_request_without_force_is_ignored_while_a_leader_is_live():
    """thesis §4.2.3: "if a server receives a RequestVote request within the minimum election
    timeout of hearing from a current leader, it does not update its term or grant its vote" -
    no term change, no vote, no reply."""
    node = follower_of_live_leader()
    out = node.step(msg(RequestVote(5, 3, 10, 5)))
    assert out == []
    assert node.term == 1 and node.voted_for is None and node.leader == 2


def test_pre_vote_is_refused_while_a_leader_is_live():
    """thesis §4.2.3 / §9.6: a pre-vote asked within the minimum election timeout of hearing
    from the leader is refused (for an up-to-date candidate too), and changes nothing."""
    node = follower_of_live_leader()
    out = node.step(msg(PreVote(2, 3, 10, 5)))
    assert [m.vote_granted for m in sends(out, PreVoteReply)] == [False]
    assert node.term == 1 and node.voted_for is None


def test_forced_vote_request_bypasses_stickiness():
    """thesis §3.10 / §4.2.3: a RequestVote caused by a leadership transfer (force) is handled
    normally even though a leader is live."""
    node = follower_of_live_leader()
    out = node.step(msg(RequestVote(2, 3, 10, 5, force=True)))
    assert sends(out, RequestVoteReply) == [RequestVoteReply(2, True, 1)]
    assert node.term == 2 and node.voted_for == 3


def test_vote_request_is_handled_once_the_lease_expired():
    """thesis §4.2.3: stickiness only lasts the minimum election timeout after hearing from the
    leader; after that a vote request is handled normally."""
    node = follower_of_live_leader(election_timeout=(10, 20))
    for _ in range(10):
        node.step(Event.Tick())
    out = node.step(msg(RequestVote(5, 3, 10, 5)))
    assert node.term == 5 and node.voted_for == 3
    assert sends(out, RequestVoteReply) == [RequestVoteReply(5, True, 1)]


def test_live_leader_ignores_an_unforced_vote_request_from_a_higher_term():
    """thesis §4.2.3: a leader that is in contact with its cluster is not deposed by a
    disruptive candidate's RequestVote either (it keeps its term and role)."""
    net = Network([1, 2, 3])
    net.elect(1)
    out = net.send(1, RequestVote(9, 3, 100, 9))
    assert out == [] and net[1].role is Role.LEADER and net[1].term == 1
