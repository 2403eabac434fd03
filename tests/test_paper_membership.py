"""Cluster membership changes (thesis chapter 4): single-server changes, learners, joins."""

from __future__ import annotations

import pytest

from raftfast import (
    Action,
    AppendEntries,
    ConfigInProgressError,
    EntryKind,
    Event,
    LogEntry,
    Membership,
    NotLeaderError,
    PreVote,
    RaftConfig,
    RaftError,
    RequestVote,
    RequestVoteReply,
    Role,
)
from raftharness import Network, entry, make_leader, node_alone, of_type, send_pairs, sends


def msg(m):
    return Event.Message(m)


def config_entry(term, index, voters, learners=()):
    return LogEntry(term, index, EntryKind.CONFIG, Membership.of(voters, learners).encode())


def cluster_with_joiner(ids=(1, 2, 3), new=4):
    """A cluster with leader 1 (its no-op committed everywhere) and a fresh node `new`
    started with join=True, reachable but not yet a member."""
    net = Network(list(ids))
    net.elect(1)
    net.heartbeat(1)
    net.add_node(new, RaftConfig(new, join=True))
    return net


# ---------------------------------------------------------------- voters


def test_add_a_voter():
    """thesis §4.1: the leader appends a configuration entry adding the server; it replicates
    to the new server too, and the new configuration decides every quorum from then on."""
    net = cluster_with_joiner()
    out = net.step(1, Event.AddServer(4))
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3, 4), ())]
    assert net[1].members == (1, 2, 3, 4)
    # the new server is contacted at once (not only at the next heartbeat), and learns the
    # configuration that adds it without waiting for one
    assert sorted(to for to, _ in send_pairs(out, AppendEntries)) == [2, 3, 4]
    net.deliver_all()
    assert net[4].members == (1, 2, 3, 4)
    net.heartbeat(1)
    for i in (1, 2, 3, 4):
        assert net[i].members == (1, 2, 3, 4)
        assert net[i].commit_index == net[1].log.last_index()
    # four voters: a majority is three, so the leader and node 4 alone cannot commit
    net.partition([1, 4], [2, 3])
    net.propose(1, b"needs three")
    net.deliver_all()
    assert net.applied[1] == []
    net.heal()
    net.heartbeat(1)
    assert net.applied[1] == [b"needs three"]


def test_remove_a_voter():
    """thesis §4.1: after the entry removing a server, quorums are counted among the remaining
    voters only, and the leader stops replicating to the removed server."""
    net = Network([1, 2, 3, 4])
    net.elect(1)
    net.heartbeat(1)
    out = net.step(1, Event.RemoveServer(4))
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3), ())]
    net.deliver_all()
    net.heartbeat(1)
    assert net[1].members == net[2].members == (1, 2, 3)
    assert net[1].progress(4) is None
    net.clear_actions()
    net.isolate(3)  # {1, 2} is a majority of {1, 2, 3}
    net.propose(1, b"two of three")
    net.deliver_all()
    assert net.applied[1] == [b"two of three"]
    assert all(to != 4 for to, _ in send_pairs(net.actions[1]))


def test_removed_server_cannot_disrupt_the_cluster():
    """thesis §4.2.3: a removed server may never learn of its removal (the leader stops
    replicating to it at once), so it times out and campaigns; the remaining servers, hearing
    from their leader, refuse it, and no term changes anywhere."""
    net = Network([1, 2, 3, 4])
    net.elect(1)
    net.heartbeat(1)
    net.step(1, Event.RemoveServer(4))
    net.deliver_all()
    net.heartbeat(1)
    assert net[1].members == (1, 2, 3)
    net.clear_actions()
    net.tick_all(200)
    assert any(sends(net.actions[4], PreVote))  # it did try
    assert net.leaders() == [1]
    assert all(net[i].term == 1 for i in (1, 2, 3))
    net.propose(1, b"x")
    net.deliver_all()
    assert net.applied[1] == [b"x"]


def test_remove_the_leader():
    """thesis §4.2.2: a leader removed from the configuration keeps managing the cluster until
    the entry commits - without counting itself in majorities - then steps down; the remaining
    servers elect a leader among themselves, and the old one never disrupts them."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.heartbeat(1)
    net.step(1, Event.RemoveServer(1))
    assert net[1].members == (2, 3) and net[1].role is Role.LEADER
    # the removal needs both 2 and 3 now: with 3 cut off it cannot commit, and 1 stays leader
    net.isolate(3)
    net.deliver_all()
    assert net[1].role is Role.LEADER
    assert net[1].commit_index < net[1].log.last_index()
    net.heal()
    net.heartbeat(1)
    assert net[1].role is Role.FOLLOWER
    assert net[1].term == 1  # stepping down is not a new term
    for _ in range(100):
        net.tick_all(1)
        if net.leaders():
            break
    [leader] = net.leaders()
    assert leader in (2, 3)
    net.propose(leader, b"without 1")
    net.tick_all(30)
    assert net.applied[2] == net.applied[3] == [b"without 1"]
    assert net[1].role is Role.FOLLOWER


def test_one_change_at_a_time():
    """thesis §4.1: "the leader ... does not start another configuration change until the
    previous one has committed" (ConfigInProgressError, retryable)."""
    net = cluster_with_joiner()
    net.add_node(5, RaftConfig(5, join=True))
    net.step(1, Event.AddServer(4))
    last = net[1].log.last_index()
    for event in (Event.AddServer(5), Event.RemoveServer(2), Event.AddLearner(5)):
        with pytest.raises(ConfigInProgressError):
            net.step(1, event)
    assert net[1].log.last_index() == last
    net.deliver_all()
    net.step(1, Event.AddServer(5))  # committed now: the next change goes through
    assert net[1].members == (1, 2, 3, 4, 5)


def test_no_change_before_the_leaders_first_entry_commits():
    """thesis §4.1 (and Ongaro's 2015 raft-dev correction to single-server changes): a new
    leader may not change the configuration until an entry of its own term has committed."""
    node = node_alone(1, [1, 2, 3])
    make_leader(node, [2])
    with pytest.raises(ConfigInProgressError):
        node.step(Event.AddServer(4))


def test_membership_events_on_a_follower_raise_not_leader():
    """API: membership changes go through the leader; a follower names it."""
    net = Network([1, 2, 3])
    net.elect(1)
    for event in (Event.AddServer(4), Event.RemoveServer(3), Event.AddLearner(4), Event.PromoteLearner(4)):
        with pytest.raises(NotLeaderError) as info:
            net.step(2, event)
        assert info.value.leader == 1


def test_adding_a_member_or_removing_a_stranger_is_a_noop():
    """API: adding a present member or removing an absent one appends nothing."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.heartbeat(1)
    last = net[1].log.last_index()
    for event in (Event.AddServer(2), Event.RemoveServer(9), Event.AddLearner(3)):
        assert of_type(net.step(1, event), Action.MembershipChanged) == []
    assert net[1].log.last_index() == last


def test_cannot_remove_the_last_voter():
    """thesis §4: a configuration with no voters could never elect a leader again."""
    net = Network([1])
    net.elect(1)
    with pytest.raises(RaftError):
        net.step(1, Event.RemoveServer(1))
    assert net[1].members == (1,)


# ---------------------------------------------------------------- the configuration entry itself


def test_membership_changed_is_emitted_in_the_same_step_as_the_append():
    """thesis §4.1: "a server always uses the latest configuration in its log, regardless of
    whether the entry is committed": the follower switches (and says so) in the very step that
    appends the entry, before it commits."""
    node = node_alone(2, [1, 2, 3])
    out = node.step(msg(AppendEntries(1, 1, 0, 0, [entry(1, 1, kind=EntryKind.NOOP), config_entry(1, 2, [1, 2, 3, 4])], 0)))
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3, 4), ())]
    assert node.members == (1, 2, 3, 4) and node.commit_index == 0
    # the change is announced before the reply that acknowledges the entry is sent
    kinds = [type(a) for a in out]
    assert kinds.index(Action.MembershipChanged) < kinds.index(Action.Send)


def test_truncated_configuration_entry_reverts_membership():
    """thesis §4.1: "a log entry for a configuration change may be removed (if leadership
    changes); in this case, a server must be prepared to fall back to the previous configuration
    in its log." The fall-back is announced with MembershipChanged too."""
    node = node_alone(2, [1, 2, 3])
    node.step(msg(AppendEntries(1, 1, 0, 0, [entry(1, 1, kind=EntryKind.NOOP), config_entry(1, 2, [1, 2, 3])], 1)))
    node.step(msg(AppendEntries(1, 1, 2, 1, [config_entry(1, 3, [1, 2, 3, 4])], 1)))
    assert node.members == (1, 2, 3, 4)
    out = node.step(msg(AppendEntries(2, 3, 1, 1, [entry(2, 2, kind=EntryKind.NOOP), entry(2, 3)], 1)))
    assert node.members == (1, 2, 3)
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3), ())]
    # truncating everything back to the base configuration works too
    out = node.step(msg(AppendEntries(3, 1, 1, 1, [config_entry(3, 2, [1, 2])], 1)))
    assert node.members == (1, 2)
    out = node.step(msg(AppendEntries(4, 3, 1, 1, [entry(4, 2)], 1)))
    assert node.members == (1, 2, 3)
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3), ())]


def test_join_node_never_campaigns_until_it_learns_a_configuration():
    """API / thesis §4.2.1: a server started with join=True has no configuration of its own; it
    stays a silent follower (it cannot know whom to ask for votes) until the leader's log or
    snapshot tells it the configuration. It still answers a candidate that counts it as a
    voter (see test_a_voter_that_has_not_learned_it_is_one_still_votes)."""
    node = RaftNode_join(4)
    assert node.members == () and node.learners == ()
    for _ in range(500):
        assert node.step(Event.Tick()) == []
    assert node.role is Role.FOLLOWER and node.term == 0
    out = node.step(msg(RequestVote(1, 1, 0, 0, force=True)))
    assert sends(out, RequestVoteReply) == [RequestVoteReply(1, True, 4)]
    assert node.role is Role.FOLLOWER and node.members == ()


def test_a_voter_that_has_not_learned_it_is_one_still_votes():
    """thesis §4.1 (servers answer RPCs without consulting their own configuration): the entry
    adding node 4 as a voter commits on {1, 2, 3} without reaching node 4. When the leader
    then fails, {2, 3, 4} is the only majority left, so node 4 must vote although its own log
    does not make it a voter yet. Found by `raftfast chaos` (member-remove): with node 4
    refusing, no leader could ever be elected again."""
    net = cluster_with_joiner()
    net.isolate(4)
    net.step(1, Event.AddServer(4))
    net.deliver_all()
    net.heartbeat(1)
    assert net[2].members == (1, 2, 3, 4) and net[2].commit_index == net[1].log.last_index()
    assert net[4].members == ()
    net.crash(1)
    net.heal()
    net.tick_all(200)
    leaders = [i for i in (2, 3) if net[i].role is Role.LEADER]
    assert leaders, "no leader: node 4 refused the vote the new configuration needs"
    net.heartbeat(leaders[0])
    assert net[4].members == (1, 2, 3, 4)


def RaftNode_join(node_id):
    from raftfast import RaftNode

    return RaftNode(RaftConfig(node_id, [1, 2, 3], join=True))


def test_join_node_campaigns_once_it_is_a_voter():
    """thesis §4.1: once the configuration that adds it reaches its log, the new server is a
    voter like any other and will start an election when the leader goes silent."""
    net = cluster_with_joiner()
    net.step(1, Event.AddServer(4))
    net.deliver_all()
    assert net[4].members == (1, 2, 3, 4)
    net.crash(1)
    net.clear_actions()
    net.timeout(4)
    assert sends(net.actions[4], PreVote)


# ---------------------------------------------------------------- learners


def test_add_a_learner():
    """thesis §4.2.1: a new server joins as a non-voting member: it receives the log but is not
    counted in majorities (so adding it cannot hurt availability)."""
    net = cluster_with_joiner()
    out = net.step(1, Event.AddLearner(4))
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3), (4,))]
    net.deliver_all()
    net.heartbeat(1)
    assert net[4].learners == (4,) and net[4].members == (1, 2, 3)
    assert net[4].commit_index == net[1].commit_index
    net.partition([1, 4], [2, 3])
    net.propose(1, b"x")
    net.deliver_all()
    assert net[4].log.last_index() == net[1].log.last_index()  # replicated to the learner...
    assert net.applied[1] == []  # ...which does not count towards the quorum


def test_learner_never_campaigns_or_votes():
    """thesis §4.2.1: a non-voting member does not start elections and is not asked for votes.
    Asked anyway, it answers like any server (thesis §4.1): a candidate asks only the voters
    of its own configuration, which may have promoted the learner already; its vote counts
    nowhere else."""
    net = cluster_with_joiner()
    net.step(1, Event.AddLearner(4))
    net.deliver_all()
    net.crash(1)
    net.clear_actions()
    net.tick(4, 300)
    assert sends(net.actions[4]) == [] and net[4].role is Role.FOLLOWER
    out = net.send(4, RequestVote(5, 2, 100, 5, force=True))
    assert [m.vote_granted for m in sends(out, RequestVoteReply)] == [True]
    out = net.send(4, PreVote(6, 2, 100, 5))
    assert [m.vote_granted for m in sends(out)] == [True]
    assert net[4].role is Role.FOLLOWER and net[4].learners == (4,)
    # and candidates do not ask it
    net.restart(1)
    net.clear_actions()
    net.timeout(2)
    assert all(to != 4 for to, _ in send_pairs(net.actions[2]))


def test_promote_a_learner():
    """thesis §4.2.1: once the learner has caught up, the leader adds it as a voter."""
    net = cluster_with_joiner()
    net.step(1, Event.AddLearner(4))
    net.deliver_all()
    net.heartbeat(1)
    out = net.step(1, Event.PromoteLearner(4))
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3, 4), ())]
    net.deliver_all()
    net.heartbeat(1)
    assert all(net[i].members == (1, 2, 3, 4) and net[i].learners == () for i in (1, 2, 3, 4))
    net.partition([1, 4], [2, 3])
    net.propose(1, b"x")
    net.deliver_all()
    assert net.applied[1] == []  # four voters now: two is not a majority
    net.isolate(3)
    net.heal()
    net.partition([1, 2, 4], [3])
    net.heartbeat(1)
    assert net.applied[1] == [b"x"]  # 1, 2 and 4 are


def test_promote_refuses_a_lagging_learner_or_a_stranger():
    """thesis §4.2.1: promoting a learner that has not caught up would add a voter that slows
    commitment; promoting a node that is not a learner is an error (a voter: no-op)."""
    net = cluster_with_joiner()
    net.step(1, Event.AddLearner(4))
    net.deliver_all()
    net.heartbeat(1)
    net.isolate(4)
    net.propose(1, b"x")
    net.deliver_all()
    net.heartbeat(1)
    with pytest.raises(RaftError):
        net.step(1, Event.PromoteLearner(4))
    with pytest.raises(RaftError):
        net.step(1, Event.PromoteLearner(9))
    assert of_type(net.step(1, Event.PromoteLearner(2)), Action.MembershipChanged) == []
    assert net[1].learners == (4,)


def test_remove_a_learner():
    """thesis §4.2.1: a learner leaves like a voter does, with RemoveServer."""
    net = cluster_with_joiner()
    net.step(1, Event.AddLearner(4))
    net.deliver_all()
    out = net.step(1, Event.RemoveServer(4))
    assert of_type(out, Action.MembershipChanged) == [Action.MembershipChanged((1, 2, 3), ())]
    assert net[1].progress(4) is None


def test_remove_then_re_add_a_server():
    """thesis §4.1: a removed server can come back with a later AddServer; the leader brings its
    log up to date from wherever it stopped."""
    net = Network([1, 2, 3, 4])
    net.elect(1)
    net.heartbeat(1)
    net.step(1, Event.RemoveServer(4))
    net.deliver_all()
    net.heartbeat(1)
    for i in range(5):
        net.propose(1, b"%d" % i)
    net.deliver_all()
    assert net[4].log.last_index() < net[1].log.last_index()
    net.step(1, Event.AddServer(4))
    net.deliver_all()
    net.heartbeat(1)
    assert net[4].members == (1, 2, 3, 4)
    assert net[4].log.entries(1, net[4].log.last_index()) == net[1].log.entries(1, net[1].log.last_index())
    assert net.applied[4] == [b"%d" % i for i in range(5)]


def test_a_silent_leader_stops_holding_back_a_non_voters_vote():
    """Thesis §4.1 and §4.2.3: a server that does not yet know it was added as a voter must
    still vote once its leader has gone silent for an election timeout. Leader stickiness
    only protects a *live* leader (found by the simulator: seed 1768, 5 nodes)."""
    from raftfast import AppendEntries, Event, RaftConfig, RaftNode, RequestVote, RequestVoteReply

    node = RaftNode(RaftConfig(5, join=True))
    node.step(Event.Message(AppendEntries(3, 1, 0, 0, [], 0)))
    assert node.leader == 1
    for _ in range(2 * node.config.election_timeout[1]):
        node.step(Event.Tick())
    assert node.leader is None
    actions = node.step(Event.Message(RequestVote(6, 2, 10, 3, force=False)))
    replies = [a.message for a in actions if isinstance(a.message, RequestVoteReply)]
    assert replies == [RequestVoteReply(6, True, 5)]
    assert node.term == 6
