"""Linearizable reads with ReadIndex (thesis §6.4)."""

from __future__ import annotations

import pytest

from raftfast import (
    Action,
    AppendEntries,
    AppendEntriesReply,
    Event,
    NotLeaderError,
    ReadProbe,
    ReadProbeReply,
    Role,
)
from raftharness import Network, ack_all, make_leader, node_alone, of_type, send_pairs, sends


def msg(m):
    return Event.Message(m)


def ready(actions):
    return [(a.request_id, a.index) for a in of_type(actions, Action.ReadReady)]


def failed(actions):
    return [(a.request_id, a.leader) for a in of_type(actions, Action.ReadFailed)]


def test_read_on_a_new_leader_waits_for_its_noop_to_commit():
    """thesis §6.4 step 1: "If the leader has not yet marked an entry from its current term
    committed, it waits until it has done so" - until then it does not know the commit index.
    The read index is the no-op's index, and the read is released only once it commits."""
    node = node_alone(1, [1, 2, 3])
    out = make_leader(node, [2])
    noop = node.log.last_index()
    assert node.commit_index < noop
    out = node.step(Event.Read("r1"))
    assert ready(out) == []
    [probe] = sends(out, ReadProbe, to=2)
    # leadership confirmed by a quorum, but the no-op is not committed: still waiting
    out = node.step(msg(ReadProbeReply(node.term, 2, probe.seq)))
    assert ready(out) == []
    out = node.step(msg(AppendEntriesReply(node.term, True, 2, noop)))
    assert node.commit_index == noop
    assert ready(out) == [("r1", noop)]


def test_read_on_a_new_leader_is_not_served_by_the_probe_alone():
    """thesis §6.4: the same, in the other order: the no-op commits first but the quorum has
    not confirmed the read's probe yet; the read waits for the probe."""
    node = node_alone(1, [1, 2, 3])
    make_leader(node, [2])
    out = node.step(Event.Read("r1"))
    [probe] = sends(out, ReadProbe, to=2)
    out = node.step(msg(AppendEntriesReply(node.term, True, 2, node.log.last_index())))
    assert ready(out) == []
    out = node.step(msg(ReadProbeReply(node.term, 3, probe.seq)))
    assert ready(out) == [("r1", node.commit_index)]


def test_read_needs_a_quorum_to_confirm_leadership():
    """thesis §6.4 step 3: "the leader sends a new round of heartbeats and waits for their
    acknowledgments from a majority of the cluster"; the read index is the commit index when the
    read arrived."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    net.propose(1, b"w")
    net.deliver_all()
    commit = net[1].commit_index
    out = net.step(1, Event.Read("r"))
    assert ready(out) == []
    probes = send_pairs(out, ReadProbe)
    assert sorted(to for to, _ in probes) == [2, 3, 4, 5]
    seq = probes[0][1].seq
    assert ready(net.send(1, ReadProbeReply(1, 2, seq))) == []
    assert ready(net.send(1, ReadProbeReply(1, 2, seq))) == []  # a duplicate is no second vote
    assert ready(net.send(1, ReadProbeReply(1, 3, seq))) == [("r", commit)]
    assert ready(net.send(1, ReadProbeReply(1, 4, seq))) == []  # released once


def test_read_on_a_single_node_is_immediate():
    """thesis §6.4: with a cluster of one, the leader is its own quorum."""
    net = Network([1])
    net.elect(1)
    out = net.step(1, Event.Read("r"))
    assert ready(out) == [("r", 1)]
    assert sends(out) == []


def test_reads_are_released_in_order_and_an_old_probe_does_not_confirm_a_newer_read():
    """thesis §6.4: a probe acknowledgement confirms leadership as of when the probe was sent,
    so it can serve only the reads that arrived before that probe."""
    node = node_alone(1, [1, 2, 3])
    out = make_leader(node, [2])
    ack_all(node, out)
    out = node.step(Event.Read("a"))
    [first] = sends(out, ReadProbe, to=2)
    # the first probe is in flight; a second read needs a second probe
    out = node.step(Event.Read("b"))
    [second] = sends(out, ReadProbe, to=2)
    assert second.seq > first.seq
    out = node.step(msg(ReadProbeReply(node.term, 2, first.seq)))
    assert ready(out) == [("a", node.commit_index)]
    out = node.step(msg(ReadProbeReply(node.term, 3, first.seq)))
    assert ready(out) == []
    out = node.step(msg(ReadProbeReply(node.term, 3, second.seq)))
    assert ready(out) == [("b", node.commit_index)]


def test_lost_probes_are_retried_with_the_heartbeat():
    """thesis §6.4 liveness: a read whose probe (or the acknowledgements) was lost is not stuck;
    the leader asks again with its next heartbeat."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.drop_filter = lambda f, t, m: type(m) in (ReadProbe, ReadProbeReply)
    net.step(1, Event.Read("r"))
    net.deliver_all()
    assert ready(net.actions[1]) == []
    net.drop_filter = None
    net.heartbeat(1)
    assert ready(net.actions[1]) == [("r", 1)]


def test_read_on_a_follower_raises_not_leader():
    """thesis §6.4: only the leader serves ReadIndex; a follower names it."""
    net = Network([1, 2, 3])
    net.elect(1)
    with pytest.raises(NotLeaderError) as info:
        net.step(2, Event.Read("r"))
    assert info.value.leader == 1
    [rejected] = of_type(net.step_many(2, [Event.Read("r")]), Action.Rejected)
    assert isinstance(rejected.error, NotLeaderError)


def test_deposed_leaders_pending_reads_fail():
    """thesis §6.4: a leader that learns of a newer term can no longer confirm its reads; each
    pending read fails at once (ReadFailed, naming the new leader when known) so the client can
    retry there, and no ReadReady is ever emitted for them."""
    node = node_alone(1, [1, 2, 3])
    out = make_leader(node, [2])
    ack_all(node, out)
    node.step(Event.Read("a"))
    node.step(Event.Read("b"))
    out = node.step(msg(AppendEntries(node.term + 1, 3, 0, 0, [], 0)))
    assert node.role is Role.FOLLOWER
    assert failed(out) == [("a", 3), ("b", 3)]
    out = node.step(msg(ReadProbeReply(node.term - 1, 2, 1)))
    assert ready(out) == []


def test_partitioned_leaders_reads_never_succeed_and_fail_on_step_down():
    """thesis §6.4 + §6.2: a leader cut off in a minority cannot gather a quorum of probe
    acknowledgements, so its reads never return stale data; check-quorum deposes it and its
    reads fail, while the majority elects a leader and moves on."""
    net = Network([1, 2, 3, 4, 5])
    net.elect(1)
    net.partition([1, 2], [3, 4, 5])
    net.step(1, Event.Read("stale?"))
    lo = net.configs[1].election_timeout[0]
    for _ in range(4 * lo):
        net.tick_all(1)
    assert ready(net.actions[1]) == []
    assert failed(net.actions[1]) == [("stale?", None)]
    [leader] = net.leaders()
    assert leader in (3, 4, 5)
    net.propose(leader, b"newer")
    net.deliver_all()
    net.clear_actions()
    net.step(leader, Event.Read("fresh"))
    net.deliver_all()
    [(rid, index)] = ready(net.actions[leader])
    assert rid == "fresh" and index == net[leader].log.last_index()
