"""The open-loop load generator (`raftfast bench --rate`): the schedule, and that a write's
latency runs from its scheduled send time however late it is sent. No cluster and no real time:
the clock is faked, so nothing here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import struct
import threading
from typing import List

import pytest

from raftfast.kv import loadgen
from raftfast.kv.loadgen import LoadSpec, Schedule, _Generator, _Writer
from raftfast.kv.protocol import REQUEST, RESPONSE, Status, encode_not_leader, encode_response
from raftfast.runtime.address import Address

MS = 1_000_000  # ns
START = 1_000 * MS


class _Transport:
    def __init__(self) -> None:
        self.sent: List[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def requests(self) -> List[int]:
        """The request ids written, in order."""
        data = b"".join(self.sent)
        rids, pos = [], 0
        while pos < len(data):
            length, _, rid, *_, klen, vlen, _ = REQUEST.unpack_from(data, pos)
            rids.append(rid)
            pos += 4 + length
        return rids


@pytest.fixture
def clock(monkeypatch):
    """A settable perf_counter_ns for the load generator."""
    now = [START]
    monkeypatch.setattr(loadgen.time, "perf_counter_ns", lambda: now[0])
    return now


def _open_loop(clients: int, depth: int, rate: float) -> _Generator:
    """A generator in the open loop's measuring state, its clients connected to fake transports."""
    gen = _Generator(LoadSpec(["127.0.0.1:1"], clients=clients, depth=depth, keys=10, rate=rate))
    for i in range(clients):
        writer = _Writer(gen, client_id=i + 1)
        writer.connection_made(_Transport())  # type: ignore[arg-type]
        gen.writers[i] = writer
    gen.schedule = Schedule(rate, START)
    gen.measuring = True
    gen.window = (START, loadgen._NEVER)
    return gen


def _reply(writer: _Writer, rids: List[int], status: int = Status.OK) -> None:
    writer.data_received(b"".join(encode_response(rid, status) for rid in rids))


def test_schedule_spaces_writes_evenly_from_the_start():
    schedule = Schedule(1000.0, START)
    assert schedule.due(START - 1) == 0
    assert schedule.due(START) == 1  # write 0 is due at the start
    assert schedule.due(START + MS - 1) == 1
    assert schedule.due(START + MS) == 2
    assert schedule.due(START + 1000 * MS) == 1001
    assert [schedule.time_of(i) - START for i in range(4)] == [0, MS, 2 * MS, 3 * MS]
    assert all(schedule.due(schedule.time_of(i)) == i + 1 for i in range(0, 5000, 7))


@pytest.mark.parametrize("rate", [0.0, -5.0, float("nan"), float("inf")])
def test_schedule_rejects_a_rate_that_is_not_a_positive_number(rate):
    with pytest.raises(ValueError):
        Schedule(rate, START)


def test_a_late_send_counts_from_its_scheduled_time(clock):
    async def body():
        gen = _open_loop(clients=1, depth=32, rate=1000.0)
        clock[0] = START + 10 * MS  # the generator wakes 10 ms late: 11 writes are due
        gen._issue(gen.schedule.due(clock[0]))
        writer = gen.writers[0]
        assert writer.transport.requests() == list(range(1, 12))
        clock[0] = START + 12 * MS  # the cluster answers all of them 2 ms after they were sent
        _reply(writer, list(range(1, 12)))
        # not 2 ms each: write i was due at START + i ms
        assert list(gen.latencies) == [(12 - i) * MS for i in range(11)]
        assert gen.completed == 11 and not writer.inflight

    asyncio.run(body())


def test_writes_beyond_the_cap_wait_and_keep_their_scheduled_time(clock):
    async def body():
        gen = _open_loop(clients=1, depth=2, rate=1000.0)
        writer = gen.writers[0]
        clock[0] = START + 4 * MS
        gen._issue(gen.schedule.due(clock[0]))  # 5 due, 2 may be in flight
        assert writer.transport.requests() == [1, 2]
        assert list(writer.backlog) == [(2, 3)] and gen.held_back == 3  # writes 2..4, one run
        clock[0] = START + 20 * MS  # a stall: the first reply comes late
        _reply(writer, [1])
        assert writer.transport.requests() == [1, 2, 3]  # the freed slot goes to the oldest due write
        assert writer.inflight[3] == START + 2 * MS  # stamped when it was due, not when it went out
        clock[0] = START + 30 * MS
        _reply(writer, [2, 3])
        assert list(gen.latencies) == [20 * MS, 29 * MS, 28 * MS]
        assert writer.transport.requests() == [1, 2, 3, 4, 5]
        assert not writer.backlog

    asyncio.run(body())


def test_only_writes_due_in_the_window_count_as_held_back(clock):
    async def body():
        gen = _open_loop(clients=1, depth=2, rate=1000.0)
        gen.window = (START + 3 * MS, loadgen._NEVER)  # the window opens at write 3
        clock[0] = START + 5 * MS
        gen._issue(gen.schedule.due(clock[0]))  # writes 0..5: 0 and 1 sent, 2..5 held back
        assert list(gen.writers[0].backlog) == [(2, 4)] and gen.held_back == 3
        clock[0] = START + 7 * MS
        gen._issue(gen.schedule.due(clock[0]))  # writes 6 and 7, all in the window
        assert gen.held_back == 5

    asyncio.run(body())


def test_due_writes_are_spread_over_the_clients_in_bursts(clock):
    async def body():
        gen = _open_loop(clients=3, depth=4, rate=1000.0)  # bursts of depth/2 = 2
        for ms in range(10):  # a wakeup per write due
            clock[0] = START + ms * MS
            gen._issue(gen.schedule.due(clock[0]))
        assert [len(w.inflight) for w in gen.writers] == [4, 4, 2]
        first = sorted(gen.writers[0].inflight.values())
        assert first == [START, START + MS, START + 6 * MS, START + 7 * MS]
        assert gen.held_back == 0

    asyncio.run(body())


def test_a_late_wakeup_gives_each_client_one_run(clock):
    """More than a burst per client due at once: each client gets one run of consecutive
    writes in one write(), not several bursts back to back; then the turns go on as before."""
    async def body():
        gen = _open_loop(clients=3, depth=8, rate=1000.0)  # bursts of 4
        gen._issue(gen.schedule.due(START))  # on time: write 0 to client 0
        clock[0] = START + 13 * MS  # 13 more due: 1 + 13 over 3 clients, at most 5 each
        gen._issue(gen.schedule.due(clock[0]))
        assert [len(w.transport.sent) for w in gen.writers] == [2, 1, 1]
        assert [sorted(w.inflight.values()) for w in gen.writers] == [
            [START + i * MS for i in range(0, 5)], [START + i * MS for i in range(5, 10)],
            [START + i * MS for i in range(10, 14)]]
        assert (gen.turn, gen.turn_used) == (0, 0)  # client 2 had more than its burst
        clock[0] = START + 14 * MS
        gen._issue(gen.schedule.due(clock[0]))
        assert gen.writers[0].inflight[6] == START + 14 * MS
        assert gen.held_back == 0

    asyncio.run(body())


def test_writes_unfinished_after_the_window_count_at_a_lower_bound(clock, monkeypatch):
    monkeypatch.setattr(loadgen, "_DRAIN", 0.0)  # do not wait for them

    async def body():
        gen = _open_loop(clients=1, depth=1, rate=1000.0)
        clock[0] = START + 2 * MS
        gen._issue(gen.schedule.due(clock[0]))  # 1 in flight, 2 held back
        gen.measuring = False
        clock[0] = START + 50 * MS
        unfinished = await gen._drain(START, START + 3 * MS)
        assert unfinished == 3
        assert sorted(gen.latencies) == [48 * MS, 49 * MS, 50 * MS]

    asyncio.run(body())


def test_a_reconnect_resends_with_the_original_stamps(clock):
    async def body():
        gen = _open_loop(clients=1, depth=2, rate=1000.0)
        old = gen.writers[0]
        clock[0] = START + 2 * MS
        gen._issue(gen.schedule.due(clock[0]))
        stamps = dict(old.inflight)
        old.transport.close()
        new = _Writer(gen, client_id=1)
        new.connection_made(_Transport())  # type: ignore[arg-type]
        new.next_seq, new.inflight, new.backlog = old.next_seq, old.inflight, old.backlog
        clock[0] = START + 40 * MS
        new.resend()
        assert new.transport.requests() == [1, 2]  # same seqs: the session deduplicates
        assert new.inflight == stamps
        _reply(new, [1])
        assert list(gen.latencies) == [40 * MS]  # the reconnect counts against the latency
        assert new.transport.requests() == [1, 2, 3]

    asyncio.run(body())


def test_a_not_leader_response_redirects_the_client(clock):
    async def body():
        gen = _open_loop(clients=1, depth=4, rate=1000.0)
        writer = gen.writers[0]
        gen._issue(gen.schedule.due(START + 2 * MS))
        writer.data_received(encode_not_leader(1, 2, "10.0.0.2:7001")[:12])  # not all of it yet
        assert writer.redirect is None and not writer.transport.closing
        writer.data_received(encode_not_leader(1, 2, "10.0.0.2:7001")[12:] + encode_response(2, Status.OK))
        assert writer.redirect == Address("10.0.0.2", 7001) and writer.transport.closing
        assert gen.errors == 1 and len(writer.inflight) == 3  # resent on the new connection

    asyncio.run(body())


def test_replies_read_before_a_redirect_count_and_their_slots_are_refilled(clock):
    """Closed loop: writes acknowledged in the same read as a NOT_LEADER were applied, so they
    count; and the new connection keeps `depth` writes in flight, not `depth` less those."""
    async def body():
        gen = _Generator(LoadSpec(["127.0.0.1:1"], clients=1, depth=4, keys=10))
        gen.measuring, gen.window = True, (0, loadgen._NEVER)
        old = _Writer(gen, client_id=1)
        old.connection_made(_Transport())  # type: ignore[arg-type]
        old.send(4)
        old.data_received(encode_response(1, Status.OK) + encode_response(2, Status.OK)
                          + encode_not_leader(3, 2, "10.0.0.2:7001"))
        assert gen.completed == 2 and gen.errors == 1 and old.transport.closing
        new = _Writer(gen, client_id=1)
        new.connection_made(_Transport())  # type: ignore[arg-type]
        new.take_over(old)
        assert new.transport.requests() == [3, 4, 5, 6]  # the two in flight resent, two new
        assert sorted(new.inflight) == [3, 4, 5, 6]

    asyncio.run(body())


@pytest.mark.parametrize("length", [0, 4, (1 << 16) + 1, 0xFFFFFFFF])
def test_a_response_with_an_impossible_length_drops_the_connection(clock, length):
    """Not an exception out of data_received, nor a read into the next frame, nor a buffer
    that waits for gigabytes: an error, and the connection is closed (the client reconnects
    and resends)."""
    async def body():
        gen = _open_loop(clients=1, depth=4, rate=1000.0)
        writer = gen.writers[0]
        gen._issue(gen.schedule.due(START + 1 * MS))
        writer.data_received(encode_response(1, Status.OK) + RESPONSE.pack(length, 2, Status.OK) + b"\0" * 8)
        assert writer.transport.closing and gen.errors == 1 and writer.buffer == b""
        assert list(writer.inflight) == [2]

    asyncio.run(body())


class _Acknowledger(asyncio.Protocol):
    """A stub KV server that acknowledges every put at once."""

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        data, pos, replies = self.buffer + data, 0, []
        while len(data) - pos >= REQUEST.size:
            length, _, rid = struct.unpack_from("<IBI", data, pos)
            if pos + 4 + length > len(data):
                break
            replies.append(encode_response(rid, Status.OK))
            pos += 4 + length
        self.buffer = data[pos:]
        self.transport.write(b"".join(replies))


@pytest.fixture
def acknowledger(monkeypatch):
    """The address of a stub server (on its own thread and loop) the generator takes for the leader."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_Acknowledger, "127.0.0.1", 0))
    address = Address("127.0.0.1", server.sockets[0].getsockname()[1])

    async def leader(*args, **kwargs):
        return address

    monkeypatch.setattr(loadgen, "_find_leader", leader)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield str(address)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    server.close()
    loop.close()


def test_every_write_due_in_the_window_is_accounted_for(acknowledger):
    report = loadgen.generate_load(LoadSpec([acknowledger], clients=4, depth=8, keys=10, warmup=0.1,
                                            duration=0.3, rate=2000.0))
    assert report.scheduled > 0 and report.completed > 0 and report.errors == 0
    # each write due in the window has a latency: acknowledged, or unfinished at a lower bound
    assert len(report.latencies) // 8 == report.scheduled
    assert report.unfinished <= report.scheduled and report.held_back <= report.scheduled
    assert len(report.pacer_lag_us) == 3
