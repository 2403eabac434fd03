"""The runtime on real loopback sockets: in-process nodes on one event loop (LocalKVCluster)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct

import pytest

from raftfast import framing
from raftfast.kv.local import LocalKVCluster
from raftfast.kv.server import ServerOptions
from raftfast.messages import RequestVote
from raftfast.runtime.handshake import Hello
from raftfast.runtime.loop import run

pytestmark = pytest.mark.timeout(60)

FAST = ServerOptions(node_id=1, tick_interval=0.005, election_timeout=(10, 20))


async def _values(kv, keys):
    return [await kv.get(k) for k in keys]


def test_writes_replicate_and_reads_are_served():
    async def main():
        async with LocalKVCluster(3) as cluster:
            leader = await cluster.wait_leader()
            async with cluster.client() as kv:
                await kv.put(b"a", b"1")
                assert await kv.get(b"a") == b"1"
                assert await kv.cas(b"a", b"1", b"2") is True
                assert await kv.cas(b"a", b"1", b"3") is False
                assert await kv.cas(b"new", None, b"x") is True
                await kv.append(b"a", b"+")
                await kv.delete(b"new")
                assert await _values(kv, [b"a", b"new", b"missing"]) == [b"2+", None, None]
                await asyncio.gather(*(kv.put(b"k%d" % i, b"v%d" % i) for i in range(500)))
            await cluster.wait_applied(leader.raft.node.commit_index)
            for server in cluster.servers.values():
                assert server.service.store.data[b"k499"] == b"v499"
                assert server.service.store.data[b"a"] == b"2+"

    run(main())


def test_leader_failover_keeps_committed_writes():
    async def main():
        async with LocalKVCluster(3) as cluster:
            old = await cluster.wait_leader()
            async with cluster.client(timeout=10.0) as kv:
                await asyncio.gather(*(kv.put(b"before%d" % i, b"x") for i in range(200)))
                await cluster.stop_node(old.id)
                # the same client carries on: NOT_LEADER / lost connection -> the new leader
                await asyncio.gather(*(kv.put(b"after%d" % i, b"y") for i in range(200)))
                new = await cluster.wait_leader()
                assert new.id != old.id
                assert await kv.get(b"before199") == b"x"
                assert await kv.get(b"after199") == b"y"

    run(main())


def test_follower_restarts_from_its_wal(tmp_path):
    async def main():
        async with LocalKVCluster(3, data_dir=str(tmp_path), options=FAST) as cluster:
            leader = await cluster.wait_leader()
            follower = next(i for i in cluster.ids if i != leader.id)
            async with cluster.client() as kv:
                await asyncio.gather(*(kv.put(b"one%d" % i, b"1") for i in range(300)))
                await cluster.wait_applied(leader.raft.node.commit_index)
                had = cluster.servers[follower].raft.node.log.last_index()
                await cluster.stop_node(follower)
                await asyncio.gather(*(kv.put(b"two%d" % i, b"2") for i in range(300)))
                restarted = await cluster.start_node(follower)
                # recovered from its own WAL: the first writes are in its log already
                assert restarted.raft.node.log.last_index() == had
                await kv.put(b"three", b"3")
                await cluster.wait_applied(cluster.leader().raft.node.commit_index, [follower])
            store = restarted.service.store.data
            assert store[b"one299"] == b"1" and store[b"two299"] == b"2" and store[b"three"] == b"3"

    run(main())


def test_membership_change_adds_and_removes_a_node():
    async def main():
        async with LocalKVCluster(3) as cluster:
            await cluster.wait_leader()
            async with cluster.client() as kv:
                await asyncio.gather(*(kv.put(b"k%d" % i, b"v") for i in range(100)))
                await cluster.start_node(4, join=True, members=[1, 2, 3])
                await kv.add_server(4)
                leader = await cluster.wait_leader()
                assert leader.raft.node.members == (1, 2, 3, 4)
                await kv.put(b"with4", b"yes")
                await cluster.wait_applied(leader.raft.node.commit_index, [4])
                assert cluster.servers[4].service.store.data[b"k99"] == b"v"
                victim = next(i for i in (1, 2, 3) if i != leader.id)
                await kv.remove_server(victim)
                assert cluster.leader().raft.node.members == tuple(i for i in (1, 2, 3, 4) if i != victim)
                await cluster.stop_node(victim)
                await kv.put(b"without", b"ok")
                assert await kv.get(b"without") == b"ok"

    run(main())


def test_snapshot_is_installed_on_a_wiped_follower(tmp_path):
    options = dataclasses.replace(FAST, snapshot_threshold=10)

    async def main():
        async with LocalKVCluster(3, data_dir=str(tmp_path), options=options) as cluster:
            leader = await cluster.wait_leader()
            follower = next(i for i in cluster.ids if i != leader.id)
            await cluster.stop_node(follower)
            cluster.wipe_node(follower)
            async with cluster.client() as kv:
                for round_ in range(30):  # one entry per round: several snapshots
                    await asyncio.gather(*(kv.put(b"k%d" % i, b"r%d" % round_) for i in range(20)))
                leader = cluster.leader()
                assert leader.raft.node.log.snapshot_index() > 0
                wiped = await cluster.start_node(follower)
                await kv.put(b"last", b"1")
                await cluster.wait_applied(leader.raft.node.commit_index, [follower])
            assert wiped.raft.node.log.snapshot_index() > 0  # it got a snapshot, not the entries
            assert wiped.service.store.data == leader.service.store.data
            assert wiped.service.store.sessions.keys() == leader.service.store.sessions.keys()

    run(main())


# -- bad input on the peer port ----------------------------------------------------------------


async def _probe(address, payload: bytes) -> bytes:
    """Send `payload` to `address`; return what is read until the peer closes (or b'?')."""
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(payload)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), 2.0)
    except asyncio.TimeoutError:
        data = b"?"  # still open
    writer.close()
    return data


def _frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


@pytest.mark.parametrize(
    "case, reason",
    [
        ("garbage", "bad handshake"),
        ("oversized", "length prefix"),
        ("wrong-cluster", "belongs to cluster 'other'"),
        ("wrong-target", "dialed node 99"),
        ("bad-message", "undecodable frame"),
        ("impostor", "'s connection"),
    ],
)
def test_bad_peer_input_closes_only_that_connection(case, reason, caplog):
    caplog.set_level(logging.WARNING, "raftfast.runtime.peers")

    async def main():
        async with LocalKVCluster(3) as cluster:
            leader = await cluster.wait_leader()
            async with cluster.client() as kv:
                await kv.put(b"before", b"1")
                target = leader.raft.peer_address
                me, other = (i for i in cluster.ids if i != leader.id)
                hello = _frame(Hello("raftfast", me, leader.id).encode())
                payload = {
                    "garbage": _frame(b"\x00garbage that is no hello"),
                    "oversized": struct.pack("<I", framing.MAX_FRAME + 1) + b"x" * 16,
                    "wrong-cluster": _frame(Hello("other", me, leader.id).encode()),
                    "wrong-target": _frame(Hello("raftfast", me, 99).encode()),
                    "bad-message": hello + _frame(b"\x01\x05not an append entries"),
                    "impostor": hello + framing.encode_frame(RequestVote(1, other, 0, 0)),
                }[case]
                assert await _probe(target, payload) == b""  # closed by the node
                await kv.put(b"after", b"2")
                assert await kv.get(b"before") == b"1"
                assert await kv.get(b"after") == b"2"
                assert cluster.leader() is leader  # nothing else changed

    run(main())
    assert any(reason in r.getMessage() and "closing peer connection" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


def test_a_peer_dialing_a_wrong_address_is_refused(caplog):
    """A node whose peer list points at the wrong node: the hello names the wrong target."""
    caplog.set_level(logging.WARNING, "raftfast.runtime.peers")

    async def main():
        async with LocalKVCluster(3) as cluster:
            await cluster.wait_leader()
            one, two = cluster.servers[1], cluster.servers[2]
            one.raft.set_peer_address(3, two.peer_address)  # node 1 now dials node 2 as "3"
            await asyncio.sleep(0.3)
            async with cluster.client() as kv:
                await kv.put(b"k", b"v")

    run(main())
    assert any("dialed node 3, but this is node 2" in r.getMessage() for r in caplog.records)
