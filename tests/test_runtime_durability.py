"""Pipelined durability in the runtime: a step's actions wait for its own fsync.

The node's log is wrapped so that its sync() only writes; the fsync runs in a worker thread
and the step's actions (sends, applies, client replies) are held until it returns, then
carried out in step order. These tests use a log whose fsync blocks until the test lets it
go, or fails, and check that nothing escapes early and that a failed fsync stops the node.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import List

import pytest

from raftfast import (
    Action,
    AppendEntries,
    AppendEntriesReply,
    Event,
    LogEntry,
    MemoryLog,
    RaftConfig,
    RequestVote,
    RequestVoteReply,
)
from raftfast.errors import StorageError
from raftfast.framing import decode
from raftfast.kv.local import LocalKVCluster
from raftfast.kv.server import ServerOptions
from raftfast.runtime.durability import DeferredSyncLog, SyncWorker, supports_deferred_sync
from raftfast.runtime.loop import run
from raftfast.runtime.server import RaftServer
from raftfast.types import Role
from raftharness import log_with_terms

pytestmark = pytest.mark.timeout(60)


class GatedLog(MemoryLog):
    """A MemoryLog with WalLog's split sync, whose fsync (`sync_flushed`) blocks until
    `release()`, or fails with `fail()`. Counts what it was asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.fsyncs_started = 0
        self.fsyncs_done = 0
        self.gate = threading.Semaphore(0)
        self.error: Exception | None = None
        self.plain_syncs = 0
        self.released = 0

    def sync(self) -> None:  # what the node would call without the runtime's wrapper
        self.plain_syncs += 1

    def flush(self) -> None:
        self.flushes += 1

    def sync_flushed(self) -> None:
        self.fsyncs_started += 1
        self.gate.acquire()
        if self.error is not None:
            raise self.error
        self.fsyncs_done += 1

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    def release_started(self) -> None:
        """Let every fsync started so far complete (and no later one)."""
        while self.released < self.fsyncs_started:
            self.released += 1
            self.gate.release()

    def fail(self) -> None:
        self.error = StorageError("gated", "sync failed (EIO); the log is unusable")
        self.gate.release()


class RecordingApp:
    """An Application that records what the server carried out, in order."""

    def __init__(self) -> None:
        self.events: List[tuple] = []
        self.queued: List[object] = []

    def drain(self, events):
        events.extend(self.queued)
        self.queued.clear()

    def apply(self, index, command):
        self.events.append(("apply", index, command))

    def read_ready(self, request_id):
        self.events.append(("read", request_id))

    def read_failed(self, request_id, leader):
        self.events.append(("read_failed", request_id))

    def rejected(self, event, error):
        self.events.append(("rejected", event))

    def snapshot(self):
        return b""

    def restore(self, data):
        pass

    def role_changed(self, role, term, leader):
        self.events.append(("role", Role(role), term))

    def flush(self):
        self.events.append(("flush",))


def _config(node_id, peers=()):
    # no pre-vote: a node alone campaigns for real at once (a pre-vote needs no fsync)
    return RaftConfig(node_id, peers=peers, election_timeout=(2, 3), heartbeat_interval=1, pre_vote=False)


async def _until(predicate, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.002)


async def _settle(seconds=0.05):
    await asyncio.sleep(seconds)


def test_the_node_gets_a_deferred_log_and_the_worker_does_the_fsyncs():
    log = GatedLog()
    assert supports_deferred_sync(log) and not supports_deferred_sync(MemoryLog())
    server = RaftServer(_config(1), RecordingApp(), log, tick_interval=0.002, pipelined_sync=True)
    assert isinstance(server.node.log, DeferredSyncLog) and server.node.log.wrapped is log
    plain = RaftServer(_config(1), RecordingApp(), MemoryLog(), tick_interval=0.002)
    assert not isinstance(plain.node.log, DeferredSyncLog)
    inline = RaftServer(_config(1), RecordingApp(), GatedLog(), tick_interval=0.002)  # the default
    assert not isinstance(inline.node.log, DeferredSyncLog)
    with pytest.raises(ValueError):
        RaftServer(_config(1), RecordingApp(), MemoryLog(), pipelined_sync=True)


def test_sends_wait_for_the_fsync_of_their_step():
    """A candidate's RequestVotes depend on its new term and vote being durable: none leaves
    before the fsync of the step that campaigned returns."""

    async def main():
        log = GatedLog()
        server = RaftServer(_config(1, (2, 3)), RecordingApp(), log, tick_interval=0.002, pipelined_sync=True)
        sent: List[tuple] = []
        server.transport.send = lambda peer, frames: sent.append((peer, len(frames)))
        await server.start()
        try:
            await _until(lambda: log.fsyncs_started >= 1)  # it campaigned; the fsync blocks
            assert server.node.role == Role.CANDIDATE and server.node.term >= 1
            await _settle()
            assert sent == [], "a RequestVote left before its term and vote were durable"
            assert log.plain_syncs == 0 and log.flushes >= 1
            log.release()
            await _until(lambda: len(sent) >= 2)
            assert {peer for peer, _ in sent} == {2, 3}
        finally:
            log.release(100)
            await server.stop()

    run(main())


def test_applies_and_replies_wait_for_the_fsync_and_come_in_step_order():
    """A one-node cluster commits a proposal as soon as it is in its own log: the Apply may be
    carried out only after the fsync of that step returns, and held steps come out in order."""

    async def main():
        log = GatedLog()
        app = RecordingApp()
        server = RaftServer(_config(1), app, log, tick_interval=0.002, pipelined_sync=True)
        await server.start()
        try:
            # the election: one fsync for the term and vote, one for the no-op entry
            while not any(e[0] == "role" and e[1] == Role.LEADER for e in app.events):
                log.release_started()
                await asyncio.sleep(0.002)
            await _until(lambda: not server._held)
            app.events.clear()
            started = log.fsyncs_started
            app.queued.append(Event.Propose(b"first"))
            server.wake()
            await _until(lambda: log.fsyncs_started == started + 1)
            app.queued.append(Event.Propose(b"second"))  # waits: an fsync is under way
            server.wake()
            await _settle()
            assert [e for e in app.events if e[0] == "apply"] == [], "applied before the fsync"
            # alone, the leader's own disk is the majority: nothing commits before the fsync
            assert server.node.commit_index < server.node.log.last_index()
            log.release()  # the first fsync: "first" may be applied now
            await _until(lambda: any(e[0] == "apply" for e in app.events))
            await _until(lambda: log.fsyncs_started == started + 2)  # "second" in the next one
            await _settle()
            assert [e[2] for e in app.events if e[0] == "apply"] == [b"first"]
            log.release()
            await _until(lambda: [e[2] for e in app.events if e[0] == "apply"] == [b"first", b"second"])
            assert server.applied_index == server.node.last_applied
            # every apply was followed by a flush of the replies it produced
            assert app.events[-1] == ("flush",)
        finally:
            log.release(100)
            await server.stop()

    run(main())


def test_a_leader_replicates_during_its_own_fsync_but_counts_itself_only_after_it():
    """Thesis §10.2.1: a leader's AppendEntries leave while its own fsync of those entries
    runs; a commit may then rest on the followers alone, never on the leader's pending write.
    Everything else the leader does (applies, replies) still waits for its fsync."""

    async def main():
        log = GatedLog()
        app = RecordingApp()
        # A long election timeout: no second campaign while the test plays the voters; and no
        # check-quorum, which would depose the leader if a loaded machine kept the test from
        # answering its heartbeats for an election timeout.
        config = RaftConfig(1, peers=(2, 3), election_timeout=(50, 60), heartbeat_interval=1, pre_vote=False,
                            check_quorum=False)
        server = RaftServer(config, app, log, tick_interval=0.002, pipelined_sync=True)
        sent: List[tuple] = []
        server.transport.send = lambda peer, frames: sent.extend((peer, decode(f[4:])) for f in frames)
        await server.start()
        try:
            await _until(lambda: log.fsyncs_started >= 1)  # campaigned: term and vote
            log.release_started()
            await _until(lambda: any(type(m) is RequestVote for _, m in sent))
            term = next(m.term for _, m in sent if type(m) is RequestVote)
            server._on_messages([RequestVoteReply(term, True, 2)])
            await _until(lambda: server.node.role == Role.LEADER)
            # the no-op's fsync is under way and blocked; its AppendEntries went out anyway
            await _until(lambda: log.fsyncs_started > log.released)
            await _until(lambda: {p for p, m in sent if type(m) is AppendEntries and m.entries} == {2, 3})
            noop = server.node.log.last_index()
            assert server.node.log.durable_index() < noop
            # one follower has it: with the leader's own write pending, that is no majority
            server._on_messages([AppendEntriesReply(term, True, 2, noop)])
            await _settle()
            assert server.node.commit_index < noop
            log.release_started()  # the leader's fsync returns: it counts itself, and commits
            await _until(lambda: server.node.commit_index == noop)
            await _until(lambda: not server._held)

            # a proposal: both followers store it while the leader's fsync is blocked
            sent.clear()
            app.queued.append(Event.Propose(b"x"))
            server.wake()
            await _until(lambda: {p for p, m in sent if type(m) is AppendEntries and m.entries} == {2, 3})
            index = server.node.log.last_index()
            server._on_messages([AppendEntriesReply(term, True, 2, index), AppendEntriesReply(term, True, 3, index)])
            await _until(lambda: server.node.commit_index == index)  # the followers are a majority
            await _settle()
            assert ("apply", index, b"x") not in app.events, "applied before the leader's own fsync"
            log.release_started()
            await _until(lambda: ("apply", index, b"x") in app.events)
        finally:
            log.release(100)
            await server.stop()

    run(main())


def test_the_durable_index_follows_the_fsyncs_and_falls_with_a_truncation():
    log = DeferredSyncLog(log_with_terms([1, 1, 1]))
    assert log.durable_index() == 3  # recovered from disk
    log.append([LogEntry(2, 4, command=b"a"), LogEntry(2, 5, command=b"b")])
    log.requested(1)
    log.append([LogEntry(2, 6, command=b"c")])
    log.requested(2)
    assert log.durable_index() == 3
    log.synced(1)
    assert log.durable_index() == 5
    log.truncate(5)  # the fsync under way covers only what is left
    assert log.durable_index() == 4
    log.synced(2)
    assert log.durable_index() == 4
    log.append([LogEntry(3, 5, command=b"d")])
    log.requested(3)
    log.synced(3)
    assert log.durable_index() == 5


def test_a_failed_fsync_stops_the_node_and_nothing_held_is_carried_out():
    async def main():
        log = GatedLog()
        app = RecordingApp()
        server = RaftServer(_config(1, (2, 3)), app, log, tick_interval=0.002, pipelined_sync=True)
        sent: List[tuple] = []
        server.transport.send = lambda peer, frames: sent.append((peer, len(frames)))
        await server.start()
        await _until(lambda: log.fsyncs_started >= 1)
        log.fail()
        with pytest.raises(StorageError, match="sync failed"):
            await asyncio.wait_for(server.wait_closed(), 5)
        assert sent == [], "a send whose fsync failed went out"
        assert isinstance(server.failure, StorageError)
        started = log.fsyncs_started
        await _settle()
        assert log.fsyncs_started == started, "a failed fsync was retried"

    run(main())


def test_sync_worker_groups_requests_made_during_an_fsync():
    async def main():
        log = GatedLog()
        loop = asyncio.get_running_loop()
        synced: List[int] = []
        worker = SyncWorker(log, loop, synced.append, lambda exc: None)
        try:
            assert worker.request() == 1
            await _until(lambda: log.fsyncs_started == 1)
            assert [worker.request() for _ in range(3)] == [2, 3, 4]
            log.release()
            await _until(lambda: synced == [1])
            await _until(lambda: log.fsyncs_started == 2)
            log.release()
            await _until(lambda: synced == [1, 4])  # one fsync for requests 2..4
            await _settle()
            assert log.fsyncs_started == 2
        finally:
            log.release(10)
            worker.stop(5)

    run(main())


def test_a_wal_cluster_answers_writes_and_recovers_with_pipelined_fsyncs(tmp_path):
    """The real thing: WalLog nodes (pipelined by default) serve writes and reads, and every
    acknowledged write is in each node's WAL after a restart of the whole cluster."""
    options = ServerOptions(node_id=1, tick_interval=0.005, election_timeout=(10, 20), pipelined_sync=True)

    async def main():
        async with LocalKVCluster(3, data_dir=str(tmp_path), options=options) as cluster:
            leader = await cluster.wait_leader()
            assert isinstance(leader.raft.node.log, DeferredSyncLog)
            async with cluster.client() as kv:
                await asyncio.gather(*(kv.put(b"k%d" % i, b"v%d" % i) for i in range(500)))
                assert await kv.get(b"k499") == b"v499"
            last = leader.raft.node.commit_index
            await cluster.wait_applied(last)
            await cluster.stop()
            for node_id in cluster.ids:
                await cluster.start_node(node_id)
            await cluster.wait_leader()
            async with cluster.client() as kv:
                assert await kv.get(b"k0") == b"v0" and await kv.get(b"k499") == b"v499"
            for server in cluster.servers.values():
                assert server.raft.node.log.last_index() >= last

    run(main())


def test_pipelined_sync_is_chosen_explicitly(tmp_path):
    from raftfast.kv.server import KVServer
    from raftfast.runtime.address import Address
    from raftfast.wal import WalLog

    peers = {1: Address("127.0.0.1", 0)}
    inline = KVServer(ServerOptions(node_id=1, peers=peers, data_dir=str(tmp_path / "a")))  # the default
    piped = KVServer(ServerOptions(node_id=1, peers=peers, data_dir=str(tmp_path / "b"), pipelined_sync=True))
    try:
        assert isinstance(inline.raft.node.log, WalLog)
        assert isinstance(piped.raft.node.log, DeferredSyncLog)
    finally:
        inline.raft.node.log.close()
        piped.raft.node.log.close()


def test_time_stands_still_while_the_disk_is_stalled():
    """A candidate whose fsync hangs does not time out and campaign again and again: like an
    inline node blocked in its fsync, it sees no ticks while an fsync is stalled."""

    async def main():
        log = GatedLog()
        config = RaftConfig(1, peers=(2, 3), election_timeout=(6, 7), pre_vote=False)
        server = RaftServer(config, RecordingApp(), log, tick_interval=0.002, pipelined_sync=True)
        server.transport.send = lambda peer, frames: None
        await server.start()
        try:
            await _until(lambda: log.fsyncs_started >= 1)
            term = server.node.term
            await asyncio.sleep(0.1)  # 50 ticks: far past the election timeout (6-7 ticks)
            assert server.node.term == term and log.fsyncs_started == 1
            log.release_started()  # the disk is back: time goes on, and so do the elections
            await _until(lambda: server.node.term > term)
        finally:
            log.release(100)
            await server.stop()

    run(main())


def test_an_inline_leader_waits_for_due_acknowledgements_and_never_for_ever():
    """Inline over a log that fsyncs, a leader's proposals wait while the acknowledgements of
    what it sent about one fsync ago are due, so the commit they bring is answered before
    the next fsync blocks the loop; never once they are overdue, nor on a follower."""

    async def main():
        assert not RaftServer(_config(1, (2, 3)), RecordingApp(), MemoryLog())._await_acks  # no fsync
        assert not RaftServer(_config(1, (2, 3)), RecordingApp(), GatedLog(), pipelined_sync=True)._await_acks
        server = RaftServer(_config(1, (2, 3)), RecordingApp(), GatedLog(), tick_interval=0.002)
        assert server._await_acks
        loop = server._loop = asyncio.get_running_loop()
        node = server.node = SimpleNamespace(role=Role.LEADER, commit_index=0)  # type: ignore[assignment]
        server._propose_time = 0.010
        now = loop.time()
        server._unacked.append((5, now - 0.002))  # sent 2 ms ago: not due yet
        assert not server._acks_due()
        server._unacked[0] = (5, now - 0.009)  # due: the proposals wait, woken by a timer at worst
        assert server._acks_due() and server._wait_timer is not None
        woken: List[bool] = []
        server.wake = lambda: woken.append(True)  # type: ignore[method-assign]
        await _until(lambda: woken)
        node.commit_index = 5  # they came
        assert not server._acks_due() and not server._unacked
        server._unacked.append((9, loop.time() - 0.020))  # overdue: no more waiting
        assert not server._acks_due()
        node.role = Role.FOLLOWER
        assert not server._acks_due() and not server._unacked

    run(main())


def test_an_inline_leader_waits_for_the_clients_it_answered_half_an_fsync_at_most():
    """After an apply answered clients, the proposals wait while the application says some of
    them are still to send their next requests: half a proposal step at most."""

    class App(RecordingApp):
        awaiting = True

        def awaiting_input(self):
            return self.awaiting

    async def main():
        app = App()
        server = RaftServer(_config(1, (2, 3)), app, GatedLog(), tick_interval=0.002)
        loop = server._loop = asyncio.get_running_loop()
        node = server.node = SimpleNamespace(role=Role.LEADER, commit_index=0)  # type: ignore[assignment]
        server._propose_time = 0.010
        assert not server._answers_due()  # nothing answered yet
        server._carry_out_work([Action.Apply(1, 1, b"x")], (Role.LEADER, 1, 1), None)
        assert server._answered_at and server._answers_due() and server._wait_timer is not None
        app.awaiting = False  # they all sent theirs: no more waiting
        assert not server._answers_due() and not server._answered_at
        app.awaiting = True
        server._answered_at = loop.time() - 0.006  # more than half a step ago
        assert not server._answers_due()
        server._answered_at = loop.time()
        node.role = Role.FOLLOWER
        assert not server._answers_due()
        server._wait_timer.cancel()

    run(main())


def test_an_inline_wal_cluster_times_its_proposals_and_answers_every_write(tmp_path):
    options = ServerOptions(node_id=1, tick_interval=0.005, election_timeout=(10, 20))

    async def main():
        async with LocalKVCluster(3, data_dir=str(tmp_path), options=options) as cluster:
            leader = await cluster.wait_leader()
            async with cluster.client() as kv:
                for _ in range(5):
                    await asyncio.gather(*(kv.put(b"k%d" % i, b"v%d" % i) for i in range(200)))
                for i in range(30):  # one at a time: each answered client sends its next at once
                    await kv.put(b"seq", b"%d" % i)
                assert await kv.get(b"k199") == b"v199" and await kv.get(b"seq") == b"29"
            assert not leader.service._answered  # every answered connection sent again, or left
            assert leader.raft._await_acks and leader.raft._propose_time > 0
            await _until(lambda: not leader.raft._acks_due())

    run(main())


class SlowApp(RecordingApp):
    """Takes `delay` seconds to apply each entry."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def apply(self, index, command):
        import time

        time.sleep(self.delay)
        super().apply(index, command)


@pytest.mark.parametrize("delay, warned", [(0.3, True), (0.0, False)])
def test_a_turn_that_blocks_the_loop_for_half_an_election_timeout_is_logged(delay, warned, caplog):
    """A turn the loop cannot leave for half the shortest election timeout (here 0.1 s) is
    what costs a leader its term; the server says so, naming the time it took."""

    async def main():
        config = RaftConfig(1, election_timeout=(20, 30), heartbeat_interval=2, pre_vote=False)
        app = SlowApp(delay)
        server = RaftServer(config, app, MemoryLog(), tick_interval=0.01)
        await server.start()
        try:
            await _until(lambda: server.node.is_leader())
            app.queued.append(Event.Propose(b"x"))
            server.wake()
            await _until(lambda: any(e[0] == "apply" and e[2] == b"x" for e in app.events))
            await _settle()
        finally:
            await server.stop()

    with caplog.at_level("WARNING", logger="raftfast.runtime.server"):
        run(main())
    slow = [r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage()]
    if warned:
        assert slow and "node 1: a turn blocked the event loop for 3" in slow[0], slow
        assert "the election timeout is 200 ms at least" in slow[0]
    else:
        assert not slow


@pytest.mark.parametrize("snapshot_bytes, compacted", [(100, True), (0, False)])
def test_a_snapshot_is_taken_once_enough_bytes_were_applied(snapshot_bytes, compacted):
    """The node's hint counts entries, and an entry of the KV service holds a whole turn of
    writes: without a bound in bytes, the log in memory grew by every write until 20,000
    entries (gigabytes under load). Here 100 bytes, give or take a quarter (drawn afresh each
    time, so that the nodes do not all snapshot at once): 60-byte entries reach it at the
    second (120) or the third (180)."""

    async def main():
        config = RaftConfig(1, election_timeout=(2, 3), heartbeat_interval=1, pre_vote=False)
        app = RecordingApp()
        server = RaftServer(config, app, MemoryLog(), tick_interval=0.002, snapshot_bytes=snapshot_bytes)
        await server.start()
        try:
            await _until(lambda: server.node.is_leader())
            for i in range(3):
                command = bytes([i]) * 60
                app.queued.append(Event.Propose(command))
                server.wake()
                await _until(lambda: any(e[0] == "apply" and e[2] == command for e in app.events))
            await _settle()
            return server.node.log.snapshot_index(), server.node.log.last_index()
        finally:
            await server.stop()

    snapshot_index, last = run(main())
    assert last == 4
    if compacted:
        assert snapshot_index in (3, 4)  # after the no-op (1): 60 bytes at 2, 120 at 3, 180 at 4
    else:
        assert snapshot_index == 0


def test_snapshot_bytes_must_not_be_negative():
    with pytest.raises(ValueError, match="snapshot_bytes must be at least 0, got -1"):
        RaftServer(_config(1), RecordingApp(), MemoryLog(), snapshot_bytes=-1)
