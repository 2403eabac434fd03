"""A deterministic cluster simulator: RaftNodes stepped in one process over a faulty network.

    cluster = Cluster(3, seed=7)
    cluster.run(50)                     # ticks
    command = cluster.propose()         # a unique `key=value` command, queued for the leader
    cluster.run(10)
    assert command in cluster.applied
    run_random(seed=7, steps=200)       # random faults and load, then a liveness check

Everything random comes from `random.Random(seed)` (the cluster's, and the network's, seeded from
it), nodes are stepped in a seeded order, and node configs get seeds from the same source, so a
seed replays exactly; `trace_hash()` fingerprints the run. Each node runs a tiny key-value state
machine (`KVStore`). An `InvariantChecker` runs after every step of every node.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from ..actions import Action
from ..config import RaftConfig
from ..errors import RaftError, StorageError
from ..events import Event
from ..node import RaftNode
from ..types import EntryKind, NodeId, Role
from .invariants import InvariantChecker
from .network import Network
from .simlog import SimLog

LogFactory = Callable[[NodeId, Optional[object]], object]
"""`log_factory(node_id, previous)` returns the log a node starts with: `previous` is None for a
new node, else the log it had when it crashed (return what survives of it)."""

_MEMBERSHIP_EVENTS = (Event.AddServer, Event.AddLearner)
_OPERATOR_EVENTS = (
    Event.AddServer, Event.AddLearner, Event.PromoteLearner, Event.RemoveServer,
    Event.TransferLeadership,
)  # fmt: skip
_NODE_EVENTS = (Event.Tick, Event.Message, Event.Snapshot)
_STATS = (
    "step", "step_many", "refused", "applied", "reads", "read_failed", "snapshots", "restores",
    "membership_changed", "crashes", "pauses", "changes",
)  # fmt: skip


class LivenessFailure(AssertionError):
    """A connected majority did not commit a proposal in time."""


class KVStore:
    """The application on each node: `key=value` commands into a map, plus a running checksum
    of every command applied, so two nodes' states differ whenever their histories do."""

    __slots__ = ("data", "digest")

    def __init__(self) -> None:
        self.data: Dict[bytes, bytes] = {}
        self.digest = 0

    def apply(self, command: bytes) -> None:
        key, _, value = command.partition(b"=")
        self.data[key] = value
        self.digest = zlib.crc32(command, self.digest)

    def serialise(self) -> bytes:
        items = b";".join(k + b"=" + v for k, v in sorted(self.data.items()))
        return b"%08x;%s" % (self.digest, items)

    @classmethod
    def restore(cls, data: bytes) -> "KVStore":
        store = cls()
        if data:
            digest, _, items = data.partition(b";")
            store.digest = int(digest, 16)
            for item in items.split(b";") if items else ():
                key, _, value = item.partition(b"=")
                store.data[key] = value
        return store


def default_log_factory(node_id: NodeId, previous: Optional[object]) -> SimLog:
    return SimLog() if previous is None else previous.crash()  # type: ignore[attr-defined]


@dataclass
class Faults:
    """Per-tick probabilities of what `Cluster.chaos()` does."""

    propose: float = 0.5
    read: float = 0.1
    membership: float = 0.02
    transfer: float = 0.01
    partition: float = 0.015
    heal: float = 0.04
    crash: float = 0.01
    restart: float = 0.08
    pause: float = 0.01


class Cluster:
    """Voters 1..n and whatever joins later; nodes are stepped once per tick each.

    A node's turn gathers the messages due to it, the client and application events queued
    for it, and one Tick, in a seeded order; with probability `batch` the turn is one
    `step_many`, otherwise one `step` per event (client events a node refuses are counted).
    """

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        *,
        pre_vote: bool = True,
        check_quorum: bool = True,
        snapshot_threshold: int = 0,
        snapshot_bytes: int = 0,
        election_timeout: Tuple[int, int] = (10, 20),
        heartbeat_interval: int = 3,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        max_delay: int = 5,
        batch: float = 0.5,
        log_factory: LogFactory = default_log_factory,
        faults: Optional[Faults] = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = Network(
            self.rng.getrandbits(64), drop=drop, duplicate=duplicate, reorder=reorder,
            max_delay=max_delay,
        )  # fmt: skip
        self.checker = InvariantChecker(seed)
        self.faults = faults or Faults()
        self.batch = batch
        self.now = 0
        self._options = dict(
            election_timeout=election_timeout,
            heartbeat_interval=heartbeat_interval,
            snapshot_threshold=snapshot_threshold,
            snapshot_bytes=snapshot_bytes,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
        )
        self._initial = tuple(range(1, n + 1))
        self._log_factory = log_factory
        self.nodes: Dict[NodeId, RaftNode] = {}
        self.apps: Dict[NodeId, KVStore] = {}
        self.logs: Dict[NodeId, object] = {}
        self.down: Set[NodeId] = set()
        self.gone: Set[NodeId] = set()
        self._joined: Set[NodeId] = set()  # nodes started with join=True
        self._joining: Set[NodeId] = set()  # joiners whose AddServer/AddLearner is still queued
        self._inbox: Dict[NodeId, List[object]] = {}
        self._paused: Dict[NodeId, int] = {}  # node -> last tick of its pause
        self._held: Dict[NodeId, List[object]] = {}  # messages that reached a paused node
        self._next_id = n + 1
        self._counter = 0
        self.applied: Dict[bytes, int] = {}  # command -> index, first time any node applied it
        self.stats: Dict[str, int] = dict.fromkeys(_STATS, 0)
        self._trace: List[object] = []  # per step a tuple of ints; per Apply the command
        for nid in self._initial:
            self._start(nid)

    # -- nodes -----------------------------------------------------------------------------

    def _start(self, nid: NodeId) -> None:
        log = self._log_factory(nid, self.logs.get(nid))
        config = RaftConfig(
            nid,
            () if nid in self._joined else self._initial,
            join=nid in self._joined,
            seed=self.rng.getrandbits(32),
            **self._options,
        )
        node = RaftNode(config, log)
        self.logs[nid] = log
        self.nodes[nid] = node
        self.apps[nid] = KVStore.restore(log.snapshot().data)  # type: ignore[attr-defined]
        self.checker.started(node)

    def crash(self, nid: NodeId) -> None:
        """Stop `nid`, losing everything it had not synced and its queued events."""
        if nid in self.nodes:
            del self.nodes[nid], self.apps[nid]
            for event in self._inbox.pop(nid, ()):
                if type(event) in _MEMBERSHIP_EVENTS:  # lost: that joiner will never be added
                    self._joining.discard(event.node_id)  # type: ignore[attr-defined]
            self._held.pop(nid, None)
            self._paused.pop(nid, None)
            self.checker.crashed(nid)
            self.down.add(nid)
            self.stats["crashes"] += 1

    def pause(self, nid: NodeId, ticks: int) -> None:
        """Freeze `nid` for `ticks` ticks (a stalled process): it neither ticks nor handles
        messages, which wait for it; then it resumes with everything that arrived meanwhile."""
        if nid in self.nodes:
            self._paused[nid] = self.now + ticks
            self.stats["pauses"] += 1

    def restart(self, nid: NodeId) -> None:
        if nid in self.down:
            self.down.discard(nid)
            self._start(nid)

    def _retire(self, nid: NodeId) -> None:
        """Decommission a node that is no longer (or never became) a member."""
        self.crash(nid)
        self.down.discard(nid)
        self.gone.add(nid)

    def _new_joiner(self) -> NodeId:
        nid = self._next_id
        self._next_id += 1
        self._joined.add(nid)
        self._joining.add(nid)
        self._start(nid)
        return nid

    def leader(self) -> Optional[RaftNode]:
        """The live leader of the highest term, if any."""
        leaders = [node for node in self.nodes.values() if node.is_leader()]
        return max(leaders, key=lambda node: node.term) if leaders else None

    # -- the client and operator -----------------------------------------------------------

    def submit(self, nid: NodeId, event: object) -> None:
        """Queue `event` for node `nid`'s next turn."""
        if nid in self.nodes:
            self._inbox.setdefault(nid, []).append(event)

    def _target(self) -> Optional[NodeId]:
        """Mostly the leader; sometimes any live node, to exercise refusals."""
        leader = self.leader()
        if leader is not None and self.rng.random() < 0.8:
            return leader.id
        return self.rng.choice(sorted(self.nodes)) if self.nodes else None

    def propose(self, to: Optional[NodeId] = None) -> Optional[bytes]:
        to = self._target() if to is None else to
        if to is None:
            return None
        self._counter += 1
        command = b"k%d=%d" % (self.rng.randrange(8), self._counter)
        self.submit(to, Event.Propose(command))
        return command

    def read(self, to: Optional[NodeId] = None) -> None:
        to = self._target() if to is None else to
        if to is not None:
            self._counter += 1
            # An int id: its hash, unlike a str's, is the same in every process.
            self.submit(to, Event.Read(self._counter))

    def add_server(self, learner: bool = False) -> Optional[NodeId]:
        """Start a fresh node with `join=True` and ask the leader to add it."""
        leader = self.leader()
        if leader is None:
            return None
        nid = self._new_joiner()
        self.submit(leader.id, Event.AddLearner(nid) if learner else Event.AddServer(nid))
        return nid

    def to_leader(self, event: object) -> None:
        leader = self.leader()
        if leader is not None:
            self.submit(leader.id, event)

    # -- faults ----------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[NodeId]]) -> None:
        self.network.partition(groups)

    def isolate(self, nid: NodeId) -> None:
        self.network.isolate(nid)

    def heal(self) -> None:
        self.network.heal()

    # -- time ------------------------------------------------------------------------------

    def run(self, ticks: int, chaos: bool = False) -> None:
        for _ in range(ticks):
            if chaos:
                self.chaos()
            self.tick()

    def tick(self) -> None:
        """One tick: deliver what is due, then give every live node one turn."""
        self.now += 1
        due: Dict[NodeId, List[object]] = {}
        for _src, dst, message in self.network.deliver(self.now):
            if dst in self.nodes:
                due.setdefault(dst, []).append(Event.Message(message))
        order = sorted(self.nodes)
        self.rng.shuffle(order)
        for nid in order:
            if nid not in self.nodes:  # retired during this tick
                continue
            if self._paused.get(nid, 0) >= self.now:
                self._held.setdefault(nid, []).extend(due.get(nid, ()))
                continue
            events = self._held.pop(nid, [])
            events.extend(due.get(nid, ()))
            events.extend(self._inbox.pop(nid, ()))
            events.insert(self.rng.randrange(len(events) + 1), Event.Tick())
            self._turn(self.nodes[nid], events)

    def _turn(self, node: RaftNode, events: List[object]) -> None:
        self.checker.tick = self.now
        if self.rng.random() < self.batch:
            for event in events:
                self._stepping(event)
            self.stats["step_many"] += 1
            self._carry_out(node, node.step_many(events))
            return
        self.stats["step"] += len(events)
        for event in events:
            self._stepping(event)
            try:
                actions = node.step(event)
            except RaftError as error:
                # Only client requests may be refused; anything else is the node's failure.
                if type(event) in _NODE_EVENTS or isinstance(error, StorageError):
                    raise
                self._refused(event)
                actions = []
            self._carry_out(node, actions)

    def _stepping(self, event: object) -> None:
        """Bookkeeping for a client event about to be stepped."""
        kind = type(event)
        if kind is Event.Read:
            self.checker.read_issued(event.request_id)  # type: ignore[attr-defined]
        elif kind in _MEMBERSHIP_EVENTS:
            self._joining.discard(event.node_id)  # type: ignore[attr-defined]

    def _carry_out(self, node: RaftNode, actions: List[object]) -> None:
        """Do what the actions say, in order, then check the invariants."""
        nid = node.id
        app = self.apps[nid]
        trace, stats = self._trace, self.stats
        snapshot_wanted = False
        for action in actions:
            kind = type(action)
            if kind is Action.Send:
                self.network.send(nid, action.to, action.message, self.now)
            elif kind is Action.Apply:
                app.apply(action.command)
                self.applied.setdefault(action.command, action.index)
                stats["applied"] += 1
                trace.append(action.command)
            elif kind is Action.Snapshot:
                snapshot_wanted = True
            elif kind is Action.RestoreSnapshot:
                app = self.apps[nid] = KVStore.restore(action.data)
                stats["restores"] += 1
            elif kind is Action.MembershipChanged:
                stats["membership_changed"] += 1
            elif kind is Action.Rejected:
                self._refused(action.event)
            elif kind is Action.ReadReady:
                stats["reads"] += 1
            elif kind is Action.ReadFailed:
                stats["read_failed"] += 1
        if snapshot_wanted:
            # Answer after the whole list: the state machine is then exactly at last_applied.
            index, data = node.last_applied, app.serialise()
            self.checker.snapshot_taken(nid, index, data)
            self.submit(nid, Event.Snapshot(index, data))
            stats["snapshots"] += 1
        trace.append((self.now, nid, node.term, int(node.role), node.commit_index, len(actions)))
        self.checker.observe(node, actions)

    def _refused(self, event: object) -> None:
        self.stats["refused"] += 1
        # A joiner whose AddServer/AddLearner was refused will never hear from a leader.
        if type(event) in _MEMBERSHIP_EVENTS:
            self._retire(event.node_id)  # type: ignore[attr-defined]

    def trace_hash(self) -> str:
        """A fingerprint of everything that happened: equal for equal seeds and options."""
        return hashlib.blake2b(repr(self._trace).encode(), digest_size=16).hexdigest()

    # -- the random driver -----------------------------------------------------------------

    def chaos(self) -> None:
        """One tick's worth of random load and faults, as `faults` says."""
        rng, faults = self.rng, self.faults
        if rng.random() < faults.propose:
            for _ in range(rng.randint(1, 3)):
                self.propose()
        if rng.random() < faults.read:
            self.read()
        if rng.random() < faults.membership:
            self._random_membership()
        if rng.random() < faults.transfer:
            leader = self.leader()
            if leader is not None:
                self.submit(leader.id, Event.TransferLeadership(rng.choice(leader.members)))
        if rng.random() < faults.partition:
            self._random_partition()
        elif self.network.partitioned and rng.random() < faults.heal:
            self.heal()
        if self.nodes and rng.random() < faults.crash:
            self.crash(rng.choice(sorted(self.nodes)))
        if self.nodes and rng.random() < faults.pause:
            self.pause(rng.choice(sorted(self.nodes)), rng.randint(1, 30))
        for nid in sorted(self.down):
            if rng.random() < faults.restart:
                self.restart(nid)

    def _random_partition(self) -> None:
        ids = sorted(self.nodes.keys() | self.down)
        if self.rng.random() < 0.5:
            self.isolate(self.rng.choice(ids))
        else:
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, len(ids) - 1) if len(ids) > 1 else 1
            self.partition([ids[:cut], ids[cut:]])

    def _random_membership(self) -> None:
        leader = self.leader()
        if leader is None:
            return
        self.retire_removed(leader)
        rng, n = self.rng, len(self._initial)
        options = []
        if len(self.nodes) + len(self.down) < n + 2:
            options += ["add", "learner"]
        if leader.learners:
            options.append("promote")
        if len(leader.members) > max(1, n - 1):
            options.append("remove")
        if not options:
            return
        self.stats["changes"] += 1
        choice = rng.choice(options)
        if choice == "add":
            self.add_server()
        elif choice == "learner":
            self.add_server(learner=True)
        elif choice == "promote":
            self.submit(leader.id, Event.PromoteLearner(rng.choice(leader.learners)))
        else:
            self.submit(leader.id, Event.RemoveServer(rng.choice(leader.members)))

    def authoritative(self, leader: RaftNode) -> bool:
        """True when `leader`'s configuration is the cluster's for good: it is the newest
        leader ever, has committed an entry of its own term (so every later leader's log
        extends its commit) and has no configuration change pending."""
        return (
            leader.term == self.checker.last_leader_term
            and leader.log.term_at(leader.commit_index) == leader.term
            and config_committed(leader)
        )

    def retire_removed(self, leader: RaftNode) -> None:
        """Decommission the nodes that no configuration will ever include again: those outside
        an authoritative leader's configuration, except joiners whose addition is queued."""
        if not self.authoritative(leader):
            return
        keep = set(leader.members) | set(leader.learners) | self._joining
        for nid in sorted(self.nodes.keys() | self.down):
            if nid not in keep:
                self._retire(nid)

    # -- liveness --------------------------------------------------------------------------

    def settle(self, budget: int = 300) -> RaftNode:
        """Heal, resume and restart every node, make the network timely, and run until a
        leader is authoritative (its configuration is the cluster's for good); raises
        LivenessFailure if that takes more than `budget` ticks. Some voters may still be
        catching up; the cluster must cope."""
        self.heal()
        self._withdraw_operator_requests()
        # Raft promises liveness only when messages arrive well within an election timeout
        # (§5.6); messages may still be dropped and duplicated, but no longer held back.
        self.network.reorder = 0.0
        self._paused.clear()
        for nid in sorted(self.down):
            self.restart(nid)
        for _ in range(budget):
            leader = self.leader()
            if leader is not None and self.authoritative(leader):
                self.retire_removed(leader)
                return leader
            self.tick()
        raise LivenessFailure(self._describe(f"the cluster did not settle in {budget} ticks"))

    def _withdraw_operator_requests(self) -> None:
        """Drop the membership changes and transfers still queued: one that lands after the
        check has picked its minority of victims could turn them into a majority."""
        for nid, events in self._inbox.items():
            kept = []
            for event in events:
                if type(event) not in _OPERATOR_EVENTS:
                    kept.append(event)
                elif type(event) in _MEMBERSHIP_EVENTS:
                    self._joining.discard(event.node_id)  # type: ignore[attr-defined]
            self._inbox[nid] = kept

    def check_progress(self, budget: int = 300, retry: int = 10) -> bytes:
        """Propose to whoever leads (again every `retry` ticks) until a proposal is applied;
        raises LivenessFailure after `budget` ticks. Returns the command that committed."""
        proposals: List[bytes] = []
        for tick in range(budget):
            for command in proposals:
                if command in self.applied:
                    return command
            leader = self.leader()
            if leader is not None and tick % retry == 0:
                proposals.append(self.propose(leader.id))  # type: ignore[arg-type]
            self.tick()
        raise LivenessFailure(self._describe(f"no proposal committed within {budget} ticks"))

    def check_liveness(self, budget: int = 300) -> bytes:
        """With everything healed and then a random minority of voters crashed or isolated, a
        proposal must commit."""
        leader = self.settle(budget)
        voters = list(leader.members)
        victims = self.rng.sample(voters, self.rng.randint(0, (len(voters) - 1) // 2))
        for nid in victims:
            if self.rng.random() < 0.5:
                self.crash(nid)
            else:
                self.isolate(nid)
        return self.check_progress(budget)

    def _describe(self, problem: str) -> str:
        lines = [f"liveness: {problem} (seed {self.seed}, tick {self.now})"]
        for nid in sorted(self.nodes.keys() | self.down | self.gone):
            node = self.nodes.get(nid)
            if node is None:
                lines.append(f"  node {nid}: {'gone' if nid in self.gone else 'down'}")
                continue
            lines.append(
                f"  node {nid}: {Role(node.role).name} term {node.term} leader {node.leader} "
                f"commit {node.commit_index} applied {node.last_applied} last "
                f"{node.log.last_index()} members {node.members} learners {node.learners}"
            )
        lines.append(f"  network: {self.network.describe()}")
        return "\n".join(lines)


def config_committed(node: RaftNode) -> bool:
    """True when no CONFIG entry lies above the node's commit index."""
    log = node.log
    lo, hi = max(node.commit_index, log.snapshot_index()) + 1, log.last_index()
    return all(entry.kind != EntryKind.CONFIG for entry in log.entries(lo, hi))


@dataclass
class RunResult:
    seed: int
    nodes: int
    ticks: int
    trace_hash: str
    committed: int
    stats: Dict[str, int]


def random_cluster(seed: int, nodes: int = 3) -> Cluster:
    """A cluster whose options and network faults are drawn from `seed`."""
    rng = random.Random(seed ^ 0x5EED)
    lo = rng.choice((5, 8, 10))
    return Cluster(
        nodes,
        seed,
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        snapshot_threshold=rng.choice((0, 0, 4, 10, 30)),
        # its own generator, so that every earlier seed still draws the same cluster otherwise
        snapshot_bytes=random.Random(seed ^ 0xB17E5).choice((0, 0, 60, 300)),
        election_timeout=(lo, 2 * lo),
        heartbeat_interval=rng.randint(1, min(3, lo - 1)),
        drop=rng.choice((0.0, 0.02, 0.1)),
        duplicate=rng.choice((0.0, 0.02, 0.05)),
        reorder=rng.choice((0.0, 0.1, 0.3)),
        batch=rng.choice((0.1, 0.5, 0.9)),
    )


def run_random(seed: int, steps: int = 200, nodes: int = 3) -> RunResult:
    """`steps` ticks of random load and faults (proposals, reads, membership changes,
    transfers, partitions, crashes), then a liveness check. Raises InvariantViolation or
    LivenessFailure; the same arguments replay the same run."""
    cluster = random_cluster(seed, nodes)
    cluster.run(steps, chaos=True)
    cluster.check_liveness()
    return RunResult(
        seed, nodes, cluster.now, cluster.trace_hash(), len(cluster.applied), dict(cluster.stats)
    )
