"""The key-value service: the state machine and sessions, the client protocol on real sockets,
dedup of retried writes, leadership loss, and bad input on the client port."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from raftfast.events import Event
from raftfast.kv.local import LocalKVCluster
from raftfast.kv.server import ServerOptions
from raftfast.kv.protocol import BATCH_TAG, RESPONSE, Op, Status, encode_request
from raftfast.kv.store import KVStore, SnapshotFormatError
from raftfast.runtime.loop import run

pytestmark = pytest.mark.timeout(60)


def _batch(*frames: bytes) -> bytes:
    return BATCH_TAG + b"".join(frames)


def _write(op, key, value=b"", expected=None, cid=7, seq=1, ack=0):
    return encode_request(op, seq, key, value, expected, cid, seq, ack)


# -- the state machine ---------------------------------------------------------------------------


def test_store_applies_every_operation():
    store = KVStore()
    replies = []
    store.apply_batch(_batch(
        _write(Op.PUT, b"a", b"1", seq=1),
        _write(Op.APPEND, b"a", b"2", seq=2),
        _write(Op.CAS, b"a", b"3", b"12", seq=3),
        _write(Op.CAS, b"a", b"4", b"nope", seq=4),
        _write(Op.CAS, b"b", b"5", None, seq=5),  # expected absent
        _write(Op.DELETE, b"b", seq=6),
    ), replies)
    assert store.data == {b"a": b"3"}
    assert [r[2][0] for r in replies] == [Status.OK, Status.OK, Status.OK, Status.CAS_FAILED, Status.OK, Status.OK]


def test_store_dedups_a_retried_write_and_forgets_acknowledged_results():
    store = KVStore()
    replies = []
    store.apply_batch(_batch(_write(Op.APPEND, b"k", b"x", seq=1, ack=1)), replies)
    store.apply_batch(_batch(_write(Op.APPEND, b"k", b"x", seq=1, ack=1)), replies)  # retry
    assert store.data[b"k"] == b"x"
    assert replies[0][2] == replies[1][2] == (Status.OK, b"")
    assert store.sessions[7][1].keys() == {1}
    store.apply_batch(_batch(_write(Op.APPEND, b"k", b"y", seq=2, ack=2)), replies)
    assert store.sessions[7] == [2, {2: (Status.OK, b"")}]  # seq 1 acknowledged: forgotten
    store.apply_batch(_batch(_write(Op.APPEND, b"k", b"x", seq=1, ack=2)), replies)  # stale
    assert replies[-1][2][0] == Status.ERROR
    assert store.data[b"k"] == b"xy"


def test_store_evicts_the_least_recently_active_session():
    store = KVStore(max_sessions=2)
    for cid in (1, 2, 1, 3):
        store.apply_batch(_batch(_write(Op.PUT, b"k", b"v", cid=cid, seq=cid + 10)), None)
    assert list(store.sessions) == [1, 3]


def test_snapshot_round_trip_keeps_data_and_sessions():
    store = KVStore()
    store.apply_batch(_batch(*(_write(Op.PUT, b"k%d" % i, b"v" * i, cid=i % 3 + 1, seq=i + 1) for i in range(100))), None)
    store.apply_batch(_batch(_write(Op.CAS, b"k1", b"z", b"wrong", cid=9, seq=1)), None)
    copy = KVStore()
    copy.restore(store.snapshot())
    assert copy.data == store.data
    assert copy.sessions == store.sessions
    assert list(copy.sessions) == list(store.sessions)  # eviction order survives
    copy.restore(b"")
    assert copy.data == {} and copy.sessions == {}


@pytest.mark.parametrize("data", [b"RFKV", b"XXXX\x01" + bytes(16), KVStore().snapshot() + b"!"])
def test_restore_rejects_bad_snapshots(data):
    with pytest.raises(SnapshotFormatError):
        KVStore().restore(data)


# -- over the wire -------------------------------------------------------------------------------


async def _roundtrip(address, payload: bytes, count: int):
    """Send raw request bytes; return `count` (request id, status, body) responses."""
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(payload)
    responses = []
    for _ in range(count):
        head = await reader.readexactly(RESPONSE.size)
        length, rid, status = RESPONSE.unpack(head)
        body = await reader.readexactly(length - 5)
        responses.append((rid, status, body))
    writer.close()
    return responses


def test_a_retried_write_is_applied_once():
    async def main():
        async with LocalKVCluster(3) as cluster:
            leader = await cluster.wait_leader()
            append = encode_request(Op.APPEND, 1, b"k", b"x", None, 42, 1, 1)
            first = await _roundtrip(leader.client_address, append, 1)
            again = await _roundtrip(leader.client_address, append.replace(b"\x01\x00\x00\x00", b"\x02\x00\x00\x00", 1), 1)
            assert first[0][1] == again[0][1] == Status.OK
            async with cluster.client() as kv:
                assert await kv.get(b"k") == b"x"  # not b"xx"

    run(main())


def test_writes_during_a_leadership_transfer_all_apply_once():
    async def main():
        async with LocalKVCluster(3) as cluster:
            leader = await cluster.wait_leader()
            target = next(i for i in cluster.ids if i != leader.id)
            async with cluster.client(timeout=10.0) as kv:
                writes = []
                for i in range(100):  # a steady stream, with the transfer in the middle
                    writes += [asyncio.ensure_future(kv.append(b"log", b"%d," % (i * 20 + j))) for j in range(20)]
                    await asyncio.sleep(0.001)
                    if i == 30:
                        leader.raft.submit(Event.TransferLeadership(target))
                await asyncio.gather(*writes)
                assert (await cluster.wait_leader()).id == target
                value = await kv.get(b"log")
            assert sorted(map(int, value.rstrip(b",").split(b","))) == list(range(2000))

    run(main())


def test_writes_pending_when_the_leader_loses_its_quorum_fail_over_and_apply_once(tmp_path, caplog):
    """The leader's followers die while writes are in flight: it steps down (check-quorum) and
    answers every pending write NOT_LEADER instead of leaving it hanging. The client retries
    with the same seqs once a leader is back; each append lands exactly once, including those
    whose first attempt is committed later by the new leader."""
    caplog.set_level(logging.INFO, "raftfast.kv.service")
    options = ServerOptions(node_id=1, tick_interval=0.005, election_timeout=(10, 20))

    async def main():
        async with LocalKVCluster(3, data_dir=str(tmp_path), options=options) as cluster:
            leader = await cluster.wait_leader()
            followers = [i for i in cluster.ids if i != leader.id]
            async with cluster.client(timeout=15.0) as kv:
                await kv.put(b"log", b"")
                for i in followers:
                    await cluster.stop_node(i)
                writes = [asyncio.ensure_future(kv.append(b"log", b"%d," % i)) for i in range(200)]
                while leader.raft.node.is_leader():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                for i in followers:
                    await cluster.start_node(i)
                await asyncio.gather(*writes)
                value = await kv.get(b"log")
            assert sorted(map(int, value.rstrip(b",").split(b","))) == list(range(200))

    run(main())
    assert any("pending writes answered NOT_LEADER" in r.getMessage() for r in caplog.records)


def test_a_follower_redirects_to_the_leader():
    async def main():
        async with LocalKVCluster(3) as cluster:
            leader = await cluster.wait_leader()
            follower = next(s for s in cluster.servers.values() if s is not leader)
            request = encode_request(Op.PUT, 5, b"k", b"v", None, 3, 1, 1)
            [(rid, status, body)] = await _roundtrip(follower.client_address, request, 1)
            assert (rid, status) == (5, Status.NOT_LEADER)
            assert struct.unpack_from("<Q", body)[0] == leader.id
            assert body[8:].decode() == str(leader.client_address)
            status_reply = await _roundtrip(follower.client_address, encode_request(Op.STATUS, 6), 1)
            assert status_reply[0][1] == Status.OK and b'"role": "follower"' in status_reply[0][2]

    run(main())


@pytest.mark.parametrize(
    "case, reason",
    [
        ("unknown-op", "unknown op 99"),
        ("bad-lengths", "does not match"),
        ("oversized", "exceeds the limit"),
        ("oversized-prefix", "exceeds the limit"),
    ],
)
def test_bad_client_input_closes_that_connection(case, reason, caplog):
    caplog.set_level(logging.WARNING, "raftfast.kv.service")

    async def main():
        async with LocalKVCluster(3) as cluster:
            leader = await cluster.wait_leader()
            async with cluster.client() as kv:
                await kv.put(b"before", b"1")
                good = encode_request(Op.PUT, 1, b"k", b"v", None, 11, 1, 1)
                bad = {
                    "unknown-op": good[:4] + b"\x63" + good[5:],
                    "bad-lengths": good[:37] + struct.pack("<I", 1000) + good[41:],
                    "oversized": encode_request(Op.PUT, 2, b"k", b"x" * (2 << 20), None, 11, 2, 1),
                    "oversized-prefix": struct.pack("<I", 1 << 30) + b"\x02",
                }[case]
                reader, writer = await asyncio.open_connection(leader.client_address.host, leader.client_address.port)
                writer.write(good + bad)
                try:  # until the node closes it (a reset, when it closes with input unread)
                    await asyncio.wait_for(reader.read(), 5.0)
                except ConnectionResetError:
                    pass
                writer.close()
                await kv.put(b"after", b"2")
                assert await kv.get(b"before") == b"1"
                assert await kv.get(b"after") == b"2"

    run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert any("closing client connection" in m and reason in m for m in messages), messages
