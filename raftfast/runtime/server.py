"""RaftServer: drives a RaftNode from an asyncio loop.

One *turn* per loop iteration does all the work: everything that arrived since the last turn
goes into `step_many` (peer messages and ticks in one, the application's proposals and reads in
a second), each paying at most one durability barrier; the actions are carried out in order,
with the sends for each peer coalesced into one write. Anything that arrives asks for a turn with `loop.call_soon`, so
a busy loop batches more per turn and an idle one answers at once. Inline over a WAL, a
leader's proposals wait a moment for input that would otherwise wait a whole fsync more: the
acknowledgements of what it sent one fsync ago (`_acks_due`), and the next requests of the
clients it just answered (`_answers_due`).

With `pipelined_sync` the durability barrier is pipelined (`durability.py`): a step that wrote the log
has its fsync run by a worker thread, and its actions are held until that fsync returns, while
the loop goes on. Held actions are carried out strictly in step order, each step's only after
its own fsync. New proposals wait while an fsync is under way (they make the next one), so
the commits that peer messages bring are answered as soon as the fsync in flight completes.
One exception to holding: a leader's AppendEntries go out at once, while its own fsync runs
(thesis §10.2.1). That is safe because the node counts itself toward a commit only up to the
log's durable index (`DeferredSyncLog.durable_index`), so nothing those messages carry, the
commit index included, depends on the leader's pending write; when the fsync returns, an
empty step lets the leader count itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from .. import framing
from ..actions import Action
from ..config import RaftConfig
from ..errors import EncodingError, NotLeaderError, RaftError, StorageError
from ..events import Event
from ..messages import AppendEntries, Message
from ..node import RaftNode
from ..security.tls import TLSConfig
from ..types import NodeId, Role
from .address import Address
from .application import Application
from .durability import DeferredSyncLog, SyncWorker, supports_deferred_sync
from .peers import MAX_ENTRIES, PeerTransport
from .ratelog import RateLimitedLog

__all__ = ["RaftServer"]

logger = logging.getLogger("raftfast.runtime.server")

_Send = Action.Send
_Apply = Action.Apply
_ReadReady = Action.ReadReady
_LEADER = Role.LEADER
_Message = Event.Message
_MEMBERSHIP_EVENTS = (Event.AddServer, Event.RemoveServer, Event.AddLearner, Event.PromoteLearner)
_perf_counter = time.perf_counter
_SWITCH_INTERVAL = 0.0002
"""GIL switch interval while a sync worker runs: the worker needs the GIL for a moment before
and after each fsync, and the default 5 ms would add that much to every write's latency."""


class RaftServer:
    """A Raft node on the network: ticks, peer links, turns, and the application's actions.

    `log` is the node's RaftLog (a `WalLog` for a durable node). `peers` maps node ids to peer
    addresses; more can be learned later with `set_peer_address` or from peers' handshakes.
    `pipelined_sync` runs fsyncs in a worker thread (the log must support it: a WalLog).
    `tls` makes the peer port mutual TLS; `max_entries` bounds entries per AppendEntries received.
    `snapshot_bytes` sets the node's `RaftConfig.snapshot_bytes` to that, give or take a
    quarter (0: the config's own value stands).
    """

    def __init__(
        self,
        config: RaftConfig,
        app: Application,
        log: Any,
        *,
        cluster_id: str = "raftfast",
        peers: Optional[Dict[NodeId, Address]] = None,
        tick_interval: float = 0.01,
        client_address: str = "",
        max_frame: int = framing.MAX_FRAME,
        queue_bytes: int = 16 << 20,
        pipelined_sync: bool = False,
        tls: Optional[TLSConfig] = None,
        max_entries: int = MAX_ENTRIES,
        snapshot_bytes: int = 0,
    ) -> None:
        if tick_interval <= 0:
            raise ValueError(f"tick_interval must be positive, got {tick_interval!r}")
        if snapshot_bytes < 0:
            raise ValueError(f"snapshot_bytes must be at least 0, got {snapshot_bytes!r}")
        if snapshot_bytes:
            # Every node applies the same bytes: bounds drawn per node keep their snapshots
            # apart, since three at once stall together, their files competing for the disk
            # (80-170 ms each with three at a time).
            config = config.replace(snapshot_bytes=round(snapshot_bytes * random.uniform(0.75, 1.25)))
        self.app = app
        if pipelined_sync and not supports_deferred_sync(log):
            raise ValueError(f"pipelined_sync needs a log with flush() and sync_flushed(), not {log!r}")
        # The node sees a log whose sync() only writes; the SyncWorker does the fsyncs.
        self._deferred: Optional[DeferredSyncLog] = DeferredSyncLog(log) if pipelined_sync else None
        self._syncer: Optional[SyncWorker] = None
        # Steps whose actions wait for an fsync: (ticket or 0, work, state, settle, whether
        # work holds sends), in order.
        self._held: Deque[tuple] = deque()
        self._recount = False  # an fsync returned: step the leader so it counts itself
        self._synced = 0  # the highest ticket whose fsync completed
        self._sync_since = 0.0  # loop time since when the oldest unfinished fsync was asked for
        self._drain_after = 0  # proposals wait for this ticket's fsync at most (0: not waiting)
        self._stopping = False
        self.node = RaftNode(config, self._deferred if self._deferred is not None else log)
        # What the application has applied: the node's last_applied once the held actions
        # are carried out (it runs ahead of the application while an fsync is under way).
        self.applied_index = self.node.last_applied
        self.cluster_id = cluster_id
        self.tick_interval = tick_interval
        self.max_frame = max_frame
        self.transport = PeerTransport(
            config.id, cluster_id, self._on_messages,
            addresses={k: v for k, v in (peers or {}).items() if k != config.id},
            client_address=client_address, max_frame=max_frame, queue_bytes=queue_bytes,
            tls=tls, max_entries=max_entries,
        )
        self.peer_address: Optional[Address] = None
        self.failure: Optional[BaseException] = None
        self._inbox: List[object] = []
        self._scheduled = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._tick_handle: Optional[asyncio.TimerHandle] = None
        self._next_tick = 0.0
        self._closed: Optional[asyncio.Future] = None
        self._state = (self.node.role, self.node.term, self.node.leader)
        self._changes: Dict[int, tuple] = {}  # id(event) -> (event, future, commit index or 0)
        # Inline over a log that fsyncs, a leader's proposals wait for acknowledgements that
        # are due (`_acks_due`): per proposal step, (its last index, when its sends went out).
        self._await_acks = not pipelined_sync and supports_deferred_sync(log)
        self._unacked: Deque[Tuple[int, float]] = deque(maxlen=1024)
        self._propose_time = 0.0  # moving average of a proposal step's duration: its fsync
        self._wait_timer: Optional[asyncio.TimerHandle] = None
        self._answered_at = 0.0  # when an apply last answered clients (0: not waiting for them)
        self._awaiting_input = getattr(app, "awaiting_input", None)
        # A turn longer than half the shortest election timeout is worth a warning: a WAL
        # rotation that waited for its spare segment cost leaders their term this way.
        self._slow_turn = config.election_timeout[0] * tick_interval / 2
        self._ratelog = RateLimitedLog(logger)

    @property
    def id(self) -> NodeId:
        return self.node.id

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Restore the application from the log's snapshot, listen for peers on `host:port`
        (0 = any free port), start ticking. Returns the bound peer address."""
        self._loop = loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        snapshot = self.node.log.snapshot()
        if snapshot.index > 0:
            self.app.restore(snapshot.data)
        self.peer_address = await self.transport.listen(host, port)
        self.transport.set_members(self.node.members + self.node.learners)
        if self._deferred is not None:
            self._syncer = SyncWorker(self._deferred.wrapped, loop, self._on_synced, self._on_sync_failed,
                                      name=f"raftfast-fsync-{self.id}")
            if sys.getswitchinterval() > _SWITCH_INTERVAL:
                sys.setswitchinterval(_SWITCH_INTERVAL)
        self._next_tick = loop.time() + self.tick_interval
        self._tick_handle = loop.call_at(self._next_tick, self._tick)
        logger.info(
            "node %d: listening for peers on %s, term %d, log %d..%d, members %s",
            self.id, self.peer_address, self.node.term, self.node.log.snapshot_index(),
            self.node.log.last_index(), list(self.node.members),
        )
        return self.peer_address

    async def stop(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        self._stopping = True
        self._held.clear()  # never carried out: nothing was answered or sent for them
        syncer, self._syncer = self._syncer, None
        if syncer is not None:  # let an fsync under way finish before the log is closed
            await asyncio.get_running_loop().run_in_executor(None, syncer.stop, 10.0)
        await self.transport.close()
        for event, future, _ in self._changes.values():
            if not future.done():
                future.set_exception(RaftError("the server stopped"))
        self._changes.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Returns once the server stops; raises the fatal error if it failed."""
        assert self._closed is not None, "start() first"
        await asyncio.shield(self._closed)
        if self.failure is not None:
            raise self.failure

    def set_peer_address(self, peer: NodeId, address: Address) -> None:
        self.transport.set_address(peer, address)

    def client_address_of(self, node_id: Optional[NodeId]) -> str:
        """Where `node_id` serves clients, if a handshake told us ('' when unknown)."""
        if node_id is None:
            return ""
        if node_id == self.id:
            return self.transport.client_address
        return self.transport.client_addresses.get(node_id, "")

    # -- input -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a turn in this loop iteration (cheap to call repeatedly)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._turn)  # type: ignore[union-attr]

    def submit(self, event: object) -> None:
        self._inbox.append(event)
        self.wake()

    def _on_messages(self, messages: List[Message]) -> None:
        self._inbox.extend([_Message(m) for m in messages])
        self.wake()

    def _tick(self) -> None:
        loop = self._loop
        now = loop.time()  # type: ignore[union-attr]
        self._next_tick += self.tick_interval
        if self._next_tick < now:  # the loop was blocked: do not replay the missed ticks
            self._next_tick = now + self.tick_interval
        self._tick_handle = loop.call_at(self._next_tick, self._tick)  # type: ignore[union-attr]
        syncer = self._syncer
        if syncer is not None and syncer.requested != self._synced and now - self._sync_since > 2 * self.tick_interval:
            # The disk is stalled: time stands still for the node, as it does for an inline
            # node blocked in its fsync. Its timers running on while its actions are held
            # would only start elections that a stall of the disk cannot justify.
            return
        self._inbox.append(Event.Tick())
        self.wake()

    async def change_membership(self, event: object, timeout: float = 10.0) -> None:
        """Step a membership event (Event.AddServer, ...) and wait until it commits.

        Raises what the node refused it with (NotLeaderError, ConfigInProgressError, ...),
        NotLeaderError if leadership is lost before the commit, TimeoutError on timeout.
        """
        if type(event) not in _MEMBERSHIP_EVENTS:
            raise TypeError(f"not a membership event: {event!r}")
        future = self._loop.create_future()  # type: ignore[union-attr]
        self._changes[id(event)] = (event, future, 0)
        self.submit(event)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            self._changes.pop(id(event), None)

    # -- the turn ----------------------------------------------------------------------------

    def _turn(self) -> None:
        started = _perf_counter()
        self._run_turn()
        spent = _perf_counter() - started
        if spent > self._slow_turn:
            self._ratelog.log(
                logging.WARNING, "slow turn",
                "node %d: a turn blocked the event loop for %.0f ms (%s; the election timeout is "
                "%.0f ms at least): peers hear nothing meanwhile, and may start an election",
                self.id, spent * 1e3, "leader" if self.node.role is _LEADER else "not leader",
                self._slow_turn * 2e3,
            )

    def _run_turn(self) -> None:
        self._scheduled = False
        if self._stopping:
            return
        events = self._inbox
        self._inbox = []
        app = self.app
        # Two steps: peer messages and ticks first, then the clients' new proposals and reads.
        # On a leader the first step rarely writes the log, so the commits it finds are applied
        # and answered without waiting for the fsync that the new proposals need.
        if (events or self._recount) and self.failure is None:
            self._recount = False
            self._step(events)
            app.flush()
        syncer = self._syncer
        if syncer is not None and syncer.requested != self._synced:
            # An fsync is under way: the proposals wait and make the next one. Stepped now,
            # they would queue an fsync that every later step's actions must wait for. (They
            # wait for one fsync at most, should peer messages keep requesting more.)
            if self._drain_after == 0:
                self._drain_after = syncer.requested
            if self._synced < self._drain_after:
                app.flush()
                return
        self._drain_after = 0
        if self._await_acks and (self._acks_due() or self._answers_due()):
            app.flush()
            return
        events = []
        app.drain(events)
        if events and self.failure is None:
            if self._await_acks:
                self._propose(events)
            else:
                self._step(events)
        app.flush()

    def _propose(self, events: List[object]) -> None:
        """Step the application's events, and note when a leader's new entries went out."""
        node = self.node
        time_ = self._loop.time  # type: ignore[union-attr]
        last = node.log.last_index()
        started = time_()
        self._step(events)
        if node.log.last_index() > last and node.role == _LEADER and len(node.members) > 1:
            now = time_()
            self._propose_time += (now - started - self._propose_time) * 0.2
            self._unacked.append((node.log.last_index(), now))

    def _acks_due(self) -> bool:
        """Whether the proposals should wait a moment: the acknowledgements of entries this
        leader sent about one fsync ago are due. Their followers took about as long to sync them
        as this node takes to sync its own, so they arrive about when this node's last fsync
        ended; proposed at once, the next fsync would block the loop just as they come, and the
        commit they bring would wait for it, a whole fsync more. Waiting (until they come, or
        1.5 fsyncs after the send at most) lets the loop apply and answer them first."""
        node = self.node
        unacked = self._unacked
        if node.role != _LEADER:
            unacked.clear()
            return False
        commit = node.commit_index
        while unacked and unacked[0][0] <= commit:
            unacked.popleft()
        if not unacked:
            return False
        sent = unacked[0][1]
        expected = self._propose_time
        loop = self._loop
        age = loop.time() - sent  # type: ignore[union-attr]
        if not 0.75 * expected <= age < 1.5 * expected:
            return False
        self._wake_at(sent + 1.5 * expected)
        return True

    def _answers_due(self) -> bool:
        """Whether the proposals should wait for the clients this leader just answered: their
        next requests come a moment later, and an fsync started before they do makes them wait
        for the one after, a whole fsync more, in smaller batches. Only while the application
        says some are still to come, and for half a proposal step after the last apply at most."""
        answered = self._answered_at
        if not answered:
            return False
        awaiting = self._awaiting_input
        if awaiting is None or not awaiting() or self.node.role != _LEADER:
            self._answered_at = 0.0
            return False
        limit = answered + 0.5 * self._propose_time
        if self._loop.time() >= limit:  # type: ignore[union-attr]
            self._answered_at = 0.0
            return False
        self._wake_at(limit)
        return True

    def _wake_at(self, when: float) -> None:
        """A turn at `when` at the latest, to end a wait whatever comes."""
        timer = self._wait_timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._wait_timer = self._loop.call_at(when, self._wait_over)  # type: ignore[union-attr]

    def _wait_over(self) -> None:
        self._wait_timer = None
        self.wake()

    def _step(self, events: List[object]) -> None:
        node = self.node
        term = node.term
        try:
            actions = node.step_many(events)
        except StorageError as exc:
            self._fail(exc)
            return
        deferred = self._deferred
        ticket = 0
        if deferred is not None and deferred.dirty:
            deferred.dirty = False
            if self._syncer.requested == self._synced:  # type: ignore[union-attr]
                self._sync_since = self._loop.time()  # type: ignore[union-attr]
            ticket = self._syncer.request()  # type: ignore[union-attr]
            deferred.requested(ticket)
        held = bool(ticket or self._held)
        # A leader whose term this step did not change wrote no hard state (its vote for
        # itself was durable before any vote for it arrived), only entries: its AppendEntries
        # need not wait (thesis §10.2.1). Not while an earlier step's sends are held, so each
        # peer still gets this node's messages in order.
        early: Optional[Dict[NodeId, List[bytes]]] = (
            {} if held and node.role is _LEADER and node.term == term
            and not any(h[4] for h in self._held) else None
        )
        work, has_sends = self._prepare(actions, early)
        if early:
            self._flush_sends(early)
        state = (node.role, node.term, node.leader)
        settle = (node.is_leader(), node.commit_index, node.log.last_index(), list(self._changes)) if self._changes else None
        if held:
            self._held.append((ticket, work, state, settle, has_sends))
        else:
            self._carry_out_work(work, state, settle)

    def _prepare(self, actions: List[object],
                 early: Optional[Dict[NodeId, List[bytes]]] = None) -> Tuple[List[object], bool]:
        """The actions with their sends encoded now, as {peer: [frames]} groups in place of
        each run of Send actions (one write per peer per run), and whether there is any such
        group. With `early`, AppendEntries frames go there instead, to be sent at once."""
        work: List[object] = []
        sends: Optional[Dict[NodeId, List[bytes]]] = None
        encode_frame = framing.encode_frame
        max_frame = self.max_frame
        sends_seen = False
        for action in actions:
            if type(action) is _Send:
                try:
                    frame = encode_frame(action.message, max_frame)
                except EncodingError as exc:
                    logger.error("node %d: cannot send %s to node %d: %s",
                                 self.id, type(action.message).__name__, action.to, exc)
                    continue
                if early is not None and type(action.message) is AppendEntries:
                    early.setdefault(action.to, []).append(frame)
                    continue
                if sends is None:
                    sends = {action.to: [frame]}
                    work.append(sends)
                    sends_seen = True
                else:
                    frames = sends.get(action.to)
                    if frames is None:
                        sends[action.to] = [frame]
                    else:
                        frames.append(frame)
            else:
                sends = None
                work.append(action)
        return work, sends_seen

    def _carry_out_work(self, work: List[object], state: tuple, settle: Optional[tuple]) -> None:
        app = self.app
        for item in work:
            kind = type(item)
            if kind is dict:  # peers need not wait for this node's applies
                self._flush_sends(item)  # type: ignore[arg-type]
            elif kind is _Apply:
                app.apply(item.index, item.command)  # type: ignore[attr-defined]
                self.applied_index = item.index  # type: ignore[attr-defined]
                if self._await_acks:
                    self._answered_at = self._loop.time()  # type: ignore[union-attr]
            elif kind is _ReadReady:
                app.read_ready(item.request_id)  # type: ignore[attr-defined]
            else:
                self._carry_out(item)
        if state != self._state:
            self._state = state
            app.role_changed(*state)
        if settle is not None and self._changes:
            self._settle_changes(*settle)

    def _on_synced(self, ticket: int) -> None:
        """In the loop: the fsync for `ticket` (and every earlier one) completed."""
        if self.failure is not None or self._stopping:
            return
        self._synced = ticket
        self._deferred.synced(ticket)  # type: ignore[union-attr]
        if self._syncer is not None and self._syncer.requested != ticket:
            self._sync_since = self._loop.time()  # type: ignore[union-attr]
        held = self._held
        while held and held[0][0] <= ticket:
            work, state, settle = held.popleft()[1:4]
            self._carry_out_work(work, state, settle)
        self.app.flush()
        if self.node.role is _LEADER:
            self._recount = True
        self.wake()  # the proposals that waited for this fsync, and the recount

    def _on_sync_failed(self, exc: BaseException) -> None:
        if self.failure is None:
            self._fail(exc)

    def _flush_sends(self, sends: Dict[NodeId, List[bytes]]) -> None:
        send = self.transport.send
        for peer, frames in sends.items():
            send(peer, frames)

    def _carry_out(self, action: object) -> None:
        kind = type(action)
        if kind is Action.ReadFailed:
            self.app.read_failed(action.request_id, action.leader)  # type: ignore[attr-defined]
        elif kind is Action.Rejected:
            event = action.event  # type: ignore[attr-defined]
            change = self._changes.get(id(event))
            if change is not None and change[0] is event:
                if not change[1].done():
                    change[1].set_exception(action.error)  # type: ignore[attr-defined]
            else:
                self.app.rejected(event, action.error)  # type: ignore[attr-defined]
        elif kind is Action.MembershipChanged:
            members = action.members + action.learners  # type: ignore[attr-defined]
            logger.info("node %d: members now %s, learners %s", self.id,
                        list(action.members), list(action.learners))  # type: ignore[attr-defined]
            self.transport.set_members(members)
        elif kind is Action.Snapshot:
            self._snapshot(action.index)  # type: ignore[attr-defined]
        elif kind is Action.RestoreSnapshot:
            logger.info("node %d: restoring a snapshot through %d from the leader",
                        self.id, action.index)  # type: ignore[attr-defined]
            self.app.restore(action.data)  # type: ignore[attr-defined]
            self.applied_index = action.index  # type: ignore[attr-defined]

    def _snapshot(self, index: int) -> None:
        """Serialise the application, which has applied exactly through `index`, and have the
        node compact its log up to there in the next turn."""
        started = time.perf_counter()
        data = self.app.snapshot()
        logger.info("node %d: snapshot through %d (%d bytes, %.1f ms)", self.id,
                    index, len(data), (time.perf_counter() - started) * 1e3)
        self.submit(Event.Snapshot(index, data))

    def _settle_changes(self, is_leader: bool, commit: int, last: int, keys: List[int]) -> None:
        """Resolve membership changes as of a step whose actions were just carried out: its
        leadership, commit index and last index, and the changes registered before it."""
        changes = self._changes
        for key in keys:
            change = changes.get(key)
            if change is None:
                continue
            event, future, index = change
            if future.done():
                continue
            if not is_leader:
                future.set_exception(NotLeaderError(self.node.leader))
            elif index == 0:
                # not rejected, so its entry (or nothing, for a no-op change) is in the log now
                self._changes[key] = (event, future, last)
                if commit >= last:
                    future.set_result(None)
            elif commit >= index:
                future.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        logger.critical("node %d: storage failed, stopping: %s", self.id, exc)
        self.failure = exc
        self._held.clear()  # their fsync failed or never ran: none of it may be carried out
        self._loop.create_task(self.stop())  # type: ignore[union-attr]

    # -- introspection -----------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        node = self.node
        log = node.log
        clients = {str(self.id): self.transport.client_address}
        clients.update({str(k): v for k, v in self.transport.client_addresses.items()})
        return {
            "id": self.id,
            "role": Role(node.role).name.lower(),
            "term": node.term,
            "leader": node.leader,
            "commit_index": node.commit_index,
            "applied_index": self.applied_index,
            "last_index": log.last_index(),
            "snapshot_index": log.snapshot_index(),
            "members": list(node.members),
            "learners": list(node.learners),
            "client_addresses": clients,
        }
