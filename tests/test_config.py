"""RaftConfig: defaults, validation (each bad value names its field), raft-io spellings."""

from __future__ import annotations

import pytest

from raftfast import RaftConfig, RaftNode


def test_defaults_match_the_contract():
    c = RaftConfig(1, [2, 3])
    assert c.id == 1
    assert c.peers == (2, 3)
    assert c.election_timeout == (10, 20)
    assert c.heartbeat_interval == 3
    assert c.max_batch == 64
    assert c.snapshot_threshold == 0 and c.snapshot_bytes == 0
    assert c.seed is None
    assert c.pre_vote is True and c.check_quorum is True  # thesis §9.6
    assert c.join is False
    assert c.max_inflight >= 1 and c.max_batch_bytes >= 1 and c.max_entry_bytes >= 1


def test_own_id_among_peers_is_allowed_and_ignored():
    assert RaftConfig(2, [1, 2, 3]).peers == (1, 3)
    assert RaftConfig(1, [1]).peers == ()


def test_peers_are_normalised_to_a_sorted_tuple():
    assert RaftConfig(1, iter([5, 3, 2])).peers == (2, 3, 5)


BAD_VALUES = [
    # (field named in the message, constructor kwargs)
    ("id", dict(id=0)),
    ("id", dict(id=-1)),
    ("id", dict(id="1")),
    ("id", dict(id=True)),
    ("id", dict(id=1.0)),
    ("id", dict(id=1 << 63)),
    ("peers", dict(peers=[2, 2])),
    ("peers", dict(peers=[2, 3, 2])),
    ("peers", dict(peers=5)),
    ("peers", dict(peers=[0])),
    ("peers", dict(peers=["2"])),
    ("peers", dict(peers=[1 << 63])),
    ("election_timeout", dict(election_timeout=(10, 10))),
    ("election_timeout", dict(election_timeout=(20, 10))),
    ("election_timeout", dict(election_timeout=(0, 5))),
    ("election_timeout", dict(election_timeout=(5,))),
    ("election_timeout", dict(election_timeout=(1, 2, 3))),
    ("election_timeout", dict(election_timeout=10)),
    ("election_timeout", dict(election_timeout=(5.0, 10))),
    ("heartbeat_interval", dict(heartbeat_interval=0)),
    ("heartbeat_interval", dict(heartbeat_interval=10)),  # not below the timeout's low end
    ("heartbeat_interval", dict(heartbeat_interval=11)),
    ("heartbeat_interval", dict(heartbeat_interval=1.5)),
    ("max_batch", dict(max_batch=0)),
    ("max_batch", dict(max_batch=-3)),
    ("snapshot_threshold", dict(snapshot_threshold=-1)),
    ("seed", dict(seed="abc")),
    ("seed", dict(seed=1.5)),
    ("pre_vote", dict(pre_vote=1)),
    ("check_quorum", dict(check_quorum=None)),
    ("join", dict(join="yes")),
    ("max_inflight", dict(max_inflight=0)),
    ("max_batch_bytes", dict(max_batch_bytes=0)),
    ("max_entry_bytes", dict(max_entry_bytes=0)),
    ("snapshot_bytes", dict(snapshot_bytes=-1)),
    ("snapshot_bytes", dict(snapshot_bytes=1.5)),
    ("snapshot_bytes", dict(snapshot_bytes="64M")),
]


@pytest.mark.parametrize("field,kwargs", BAD_VALUES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_VALUES)])
def test_invalid_value_raises_value_error_naming_the_field(field, kwargs):
    kwargs = dict(kwargs)
    node_id = kwargs.pop("id", 1)
    peers = kwargs.pop("peers", (2, 3))
    with pytest.raises(ValueError) as info:
        RaftConfig(node_id, peers, **kwargs)
    assert field in str(info.value)


def test_boundary_values_are_accepted():
    RaftConfig(1, election_timeout=(2, 3), heartbeat_interval=1)
    RaftConfig(1, max_batch=1, max_inflight=1, max_batch_bytes=1, max_entry_bytes=1)
    RaftConfig(1, snapshot_threshold=0, seed=0)
    RaftConfig((1 << 63) - 1, [(1 << 63) - 2])


def test_new_and_single_spellings():
    assert RaftConfig.new(1, [2, 3]) == RaftConfig(1, [2, 3])
    assert RaftConfig.single(7) == RaftConfig(7)
    assert RaftConfig.single(7).peers == ()


def test_with_methods_return_new_validated_configs():
    base = RaftConfig.new(1, [2, 3])
    c = (
        base.with_election_timeout(20, 40)
        .with_heartbeat_interval(5)
        .with_max_batch(8)
        .with_snapshot_threshold(100)
        .with_seed(42)
    )
    assert c.election_timeout == (20, 40)
    assert c.heartbeat_interval == 5
    assert c.max_batch == 8
    assert c.snapshot_threshold == 100
    assert c.seed == 42
    assert c.peers == (2, 3) and c.id == 1
    # the original is untouched (configs are values)
    assert base == RaftConfig.new(1, [2, 3])
    assert c.with_seed(None).seed is None


@pytest.mark.parametrize(
    "field,build",
    [
        ("election_timeout", lambda c: c.with_election_timeout(5, 5)),
        ("heartbeat_interval", lambda c: c.with_heartbeat_interval(10)),
        ("max_batch", lambda c: c.with_max_batch(0)),
        ("snapshot_threshold", lambda c: c.with_snapshot_threshold(-2)),
        ("seed", lambda c: c.with_seed("x")),
    ],
)
def test_with_methods_validate(field, build):
    with pytest.raises(ValueError) as info:
        build(RaftConfig.new(1, [2, 3]))
    assert field in str(info.value)


def test_config_is_immutable():
    c = RaftConfig(1)
    with pytest.raises(Exception):
        c.id = 2  # type: ignore[misc]


def test_node_refuses_a_non_config():
    with pytest.raises(TypeError):
        RaftNode({"id": 1})  # type: ignore[arg-type]
