"""Leadership transfer (thesis §3.10): TimeoutNow, forced elections, refusal and timeout."""

from __future__ import annotations

import pytest

from raftfast import (
    Action,
    ConfigInProgressError,
    Event,
    NotLeaderError,
    RequestVote,
    Role,
    TimeoutNow,
)
from raftharness import Network, of_type, send_pairs, sends


def transfer(net, leader, target):
    return net.step(leader, Event.TransferLeadership(target))


def test_transfer_to_an_up_to_date_follower():
    """thesis §3.10: when the target's log is already current, the leader sends it TimeoutNow at
    once; the target starts an election without waiting for its timer (a forced RequestVote
    that the other followers answer despite having a live leader) and wins the next term."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"x")
    net.deliver_all()
    out = transfer(net, 1, 3)
    assert [(to, m) for to, m in send_pairs(out)] == [(3, TimeoutNow(1, 1))]
    net.deliver_one_round()
    assert net[3].role is Role.CANDIDATE and net[3].term == 2
    assert all(m.force for m in sends(net.actions[3], RequestVote))
    net.deliver_all()
    assert net.leaders() == [3]
    assert net[1].role is Role.FOLLOWER and net[1].leader == 3 and net[1].term == 2
    net.heartbeat(3)
    assert all(net.applied[i] == [b"x"] for i in net.ids)


def test_transfer_to_a_lagging_follower_catches_it_up_first():
    """thesis §3.10 step 2: "The prior leader transfers its log entries to the target server",
    and only once the target's log matches its own does it send TimeoutNow."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"%d" % i)
    net.deliver_all()
    assert net[3].log.last_index() == 1 and net[1].log.last_index() == 6
    net.heal()
    out = transfer(net, 1, 3)
    assert sends(out, TimeoutNow) == []
    assert net[1].transfer_target == 3
    # deliver round by round (heartbeats let the leader find what node 3 lost): TimeoutNow
    # must not leave before node 3 holds everything
    for _ in range(net.configs[1].election_timeout[0] - 1):
        if sends(net.actions[1], TimeoutNow):
            break
        net.tick(1)
        while net.queue and not sends(net.actions[1], TimeoutNow):
            net.deliver_one_round()
    assert sends(net.actions[1], TimeoutNow) == [TimeoutNow(1, 1)]
    assert net[3].log.last_index() == net[1].log.last_index()  # (the TimeoutNow is undelivered)
    assert net[3].role is Role.FOLLOWER
    net.deliver_all()
    assert net.leaders() == [3] and net[3].term == 2
    assert net[3].log.entries(2, 6) == net[1].log.entries(2, 6)


@pytest.mark.parametrize("target", [1, 9])
def test_transfer_to_itself_or_a_non_member_is_a_noop(target):
    """thesis §3.10 / API: transferring to the leader itself, or to a node that is not a voter,
    does nothing: no message, no pending transfer, and proposals are still taken."""
    net = Network([1, 2, 3])
    net.elect(1)
    out = transfer(net, 1, target)
    assert out == []
    assert net[1].transfer_target is None and net[1].role is Role.LEADER
    net.propose(1, b"still leading")
    net.deliver_all()
    assert net.applied[1] == [b"still leading"]


def test_transfer_to_a_learner_is_a_noop():
    """thesis §3.10 + §4.2.1: a learner cannot vote or campaign, so it cannot take over."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.add_node(4, net.configs[1].replace(id=4, join=True))
    net.step(1, Event.AddLearner(4))
    net.deliver_all()
    assert net[1].learners == (4,)
    assert transfer(net, 1, 4) == [] and net[1].transfer_target is None


def test_transfer_on_a_follower_is_a_noop():
    """API: TransferLeadership is a leader's event; elsewhere it does nothing (no error)."""
    net = Network([1, 2, 3])
    net.elect(1)
    assert transfer(net, 2, 3) == []
    assert net[2].role is Role.FOLLOWER


def test_transfer_is_abandoned_after_an_election_timeout():
    """thesis §3.10: "If the transfer does not complete within ... an election timeout, the
    prior leader aborts the transfer and resumes accepting client requests.\""""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    transfer(net, 1, 3)
    assert net[1].transfer_target == 3
    lo = net.configs[1].election_timeout[0]
    for _ in range(lo - 1):
        net.tick(1)
        net.deliver_all()
    assert net[1].transfer_target == 3
    net.tick(1)
    net.deliver_all()
    assert net[1].transfer_target is None and net[1].role is Role.LEADER
    net.propose(1, b"back")
    net.deliver_all()
    assert net.applied[1] == [b"back"]


@pytest.mark.parametrize(
    "event",
    [
        Event.Propose(b"x"),
        Event.AddServer(4),
        Event.RemoveServer(2),
        Event.AddLearner(4),
    ],
)
def test_client_requests_are_refused_during_a_transfer(event):
    """thesis §3.10 step 1: "The prior leader stops accepting new client requests" while the
    transfer is pending: step raises NotLeaderError, step_many reports Rejected, and the log is
    left alone."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)  # keep the transfer pending
    transfer(net, 1, 3)
    last = net[1].log.last_index()
    with pytest.raises(NotLeaderError):
        net.step(1, event)
    out = net.step_many(1, [event])
    [rejected] = [a for a in out if type(a) is Action.Rejected]
    assert rejected.event is event and isinstance(rejected.error, NotLeaderError)
    assert not isinstance(rejected.error, ConfigInProgressError)
    assert net[1].log.last_index() == last


def test_transfer_ends_when_the_target_takes_over_and_old_leader_follows():
    """thesis §3.10: once the target wins, the prior leader sees the new term and steps down;
    the new leader has no pending transfer of its own."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    transfer(net, 1, 4)
    net.deliver_all()
    assert net.leaders() == [4]
    assert net[1].transfer_target is None and net[4].transfer_target is None
    net.propose(4, b"new leader")
    net.deliver_all()
    net.heartbeat(4)
    assert all(net.applied[i] == [b"new leader"] for i in net.ids)


def test_timeout_now_reaching_a_non_voter_is_ignored():
    """thesis §3.10 + §4.2.1: only a voter may campaign, even when told to."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.add_node(4, net.configs[1].replace(id=4, join=True))
    out = net.send(4, TimeoutNow(1, 1))
    assert net[4].role is Role.FOLLOWER and sends(out, RequestVote) == []


def test_transfer_to_a_follower_behind_the_compaction_point():
    """thesis §3.10 with §7: a target that needs a snapshot to catch up gets it (then the tail)
    before the TimeoutNow, and still takes over within the transfer timeout."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for i in range(6):
        net.propose(1, b"%d" % i)
    net.deliver_all()
    net.step(1, Event.Snapshot(net[1].last_applied, b"snap"))
    net.propose(1, b"tail")
    net.deliver_all()
    net.heal()
    transfer(net, 1, 3)
    for _ in range(net.configs[1].election_timeout[0] - 1):
        if net.leaders() == [3]:
            break
        net.tick(1)
        net.deliver_all()
    assert net.leaders() == [3]
    assert of_type(net.actions[3], Action.RestoreSnapshot)
    net.heartbeat(3)
    assert net.applied[3] == [b"tail"] and net.applied[2][-1] == b"tail"
