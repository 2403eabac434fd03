"""A tiny deterministic harness for scenario tests: nodes plus an explicit message queue.

Nothing is delivered until a test says so, which makes it easy to assert on exactly what a node
sent, to drop a message, or to cut a node off. Independent of `raftfast.testing` on purpose: the
scenario tests should not share machinery with the randomised simulator they cross-check.

    net = Network([1, 2, 3])
    net.elect(1)                    # tick 1 past its timeout, deliver everything
    net.propose(1, b"x")
    net.deliver_all()
    assert net.applied[2] == [b"x"]
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from raftfast import (
    Action,
    AppendEntries,
    EntryKind,
    Event,
    HardState,
    LogEntry,
    MemoryLog,
    Message,
    RaftConfig,
    RaftNode,
    Role,
    TimeoutNow,
)

Envelope = Tuple[int, int, Message]  # (from, to, message)


def entry(term: int, index: int, command: Optional[bytes] = None, kind=EntryKind.NORMAL) -> LogEntry:
    """A log entry whose default command names its position, so equal (term, index) pairs
    always carry equal commands (the Log Matching property holds across built logs)."""
    if command is None:
        command = b"" if kind is EntryKind.NOOP else f"t{term}i{index}".encode()
    return LogEntry(term, index, kind, command)


def log_with_terms(terms: Iterable[int], hard_term: Optional[int] = None, voted_for=None) -> MemoryLog:
    """A MemoryLog holding one entry per term in `terms` (indexes from 1), with a hard state
    whose term defaults to the last entry's term."""
    log = MemoryLog()
    terms = list(terms)
    log.append([entry(t, i + 1) for i, t in enumerate(terms)])
    if hard_term is None:
        hard_term = terms[-1] if terms else 0
    log.set_hard_state(HardState(hard_term, voted_for))
    return log


def log_terms(log) -> List[int]:
    """The terms of every entry above the snapshot, in order."""
    first = log.snapshot_index() + 1
    return [e.term for e in log.entries(first, log.last_index())]


def sends(actions, kind=None, to=None) -> List[Message]:
    """The messages of `Action.Send` actions, optionally filtered by message type and target."""
    return [
        a.message
        for a in actions
        if type(a) is Action.Send
        and (kind is None or type(a.message) is kind)
        and (to is None or a.to == to)
    ]


def send_pairs(actions, kind=None) -> List[Tuple[int, Message]]:
    return [
        (a.to, a.message)
        for a in actions
        if type(a) is Action.Send and (kind is None or type(a.message) is kind)
    ]


def of_type(actions, kind) -> list:
    return [a for a in actions if type(a) is kind]


class Network:
    """Nodes `ids`, each a `RaftNode` over its own log, and the messages between them.

    `config(id)` builds each node's config from `ids` and `config_kwargs`; `logs` optionally
    seeds nodes with prebuilt logs. Every action a node returns is kept in `actions[id]`
    (cleared by `clear_actions`); sends go to `queue`, applies to `applied[id]`.
    """

    def __init__(
        self,
        ids: Iterable[int],
        logs: Optional[Dict[int, object]] = None,
        configs: Optional[Dict[int, RaftConfig]] = None,
        **config_kwargs,
    ) -> None:
        self.ids: List[int] = list(ids)
        self.config_kwargs = config_kwargs
        self.configs: Dict[int, RaftConfig] = {}
        self.logs: Dict[int, object] = {}
        self.nodes: Dict[int, RaftNode] = {}
        self.queue: List[Envelope] = []
        self.applied: Dict[int, List[bytes]] = {}
        self.applied_entries: Dict[int, List[Tuple[int, int, bytes]]] = {}
        self.actions: Dict[int, List[object]] = {}
        self.down: Set[int] = set()
        self._cut: Set[frozenset] = set()
        self.drop_filter: Optional[Callable[[int, int, Message], bool]] = None
        for node_id in self.ids:
            config = (configs or {}).get(node_id) or RaftConfig(node_id, self.ids, **config_kwargs)
            self.add_node(node_id, config, (logs or {}).get(node_id))

    # -- nodes -------------------------------------------------------------------------------

    def add_node(self, node_id: int, config: RaftConfig, log=None) -> RaftNode:
        if node_id not in self.ids:
            self.ids.append(node_id)
        self.configs[node_id] = config
        self.logs[node_id] = MemoryLog() if log is None else log
        self.nodes[node_id] = RaftNode(config, self.logs[node_id])
        self.applied.setdefault(node_id, [])
        self.applied_entries.setdefault(node_id, [])
        self.actions.setdefault(node_id, [])
        return self.nodes[node_id]

    def __getitem__(self, node_id: int) -> RaftNode:
        return self.nodes[node_id]

    def crash(self, node_id: int) -> None:
        """Stop a node: messages to and from it are dropped until `restart`."""
        self.down.add(node_id)

    def restart(self, node_id: int) -> RaftNode:
        """Bring a node back from its log (MemoryLog keeps everything: sync is free)."""
        self.down.discard(node_id)
        self.nodes[node_id] = RaftNode(self.configs[node_id], self.logs[node_id])
        return self.nodes[node_id]

    def isolate(self, node_id: int) -> None:
        """Cut every link of `node_id`. Cuts are checked at delivery: a message queued across a
        cut is dropped if delivered while the cut lasts, and arrives if the cut healed first."""
        for other in self.ids:
            if other != node_id:
                self._cut.add(frozenset((node_id, other)))

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between different groups."""
        groups = [set(g) for g in groups]
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                for x in a:
                    for y in b:
                        self._cut.add(frozenset((x, y)))

    def heal(self) -> None:
        self._cut.clear()

    def connected(self, a: int, b: int) -> bool:
        return a not in self.down and b not in self.down and frozenset((a, b)) not in self._cut

    # -- stepping ----------------------------------------------------------------------------

    def step(self, node_id: int, event) -> List[object]:
        """Step one node and route what it returns. Returns the actions."""
        actions = self.nodes[node_id].step(event)
        self._route(node_id, actions)
        return actions

    def step_many(self, node_id: int, events) -> List[object]:
        actions = self.nodes[node_id].step_many(events)
        self._route(node_id, actions)
        return actions

    def _route(self, node_id: int, actions) -> None:
        self.actions[node_id].extend(actions)
        for action in actions:
            kind = type(action)
            if kind is Action.Send:
                self.queue.append((node_id, action.to, action.message))
            elif kind is Action.Apply:
                self.applied[node_id].append(action.command)
                self.applied_entries[node_id].append((action.index, action.term, action.command))

    def tick(self, node_id: int, n: int = 1) -> List[object]:
        out: List[object] = []
        for _ in range(n):
            out += self.step(node_id, Event.Tick())
        return out

    def tick_all(self, n: int = 1, deliver: bool = True) -> None:
        """Tick every live node once per round, delivering everything after each round."""
        for _ in range(n):
            for node_id in self.ids:
                if node_id not in self.down:
                    self.step(node_id, Event.Tick())
            if deliver:
                self.deliver_all()

    def propose(self, node_id: int, command: bytes) -> List[object]:
        return self.step(node_id, Event.Propose(command))

    def send(self, to: int, message: Message) -> List[object]:
        """Hand `message` straight to node `to` (as if it came off the wire)."""
        return self.step(to, Event.Message(message))

    def clear_actions(self) -> None:
        for actions in self.actions.values():
            actions.clear()

    # -- delivery ----------------------------------------------------------------------------

    def take(self, predicate: Callable[[int, int, Message], bool] = lambda f, t, m: True) -> List[Envelope]:
        """Remove and return the queued messages matching `predicate`, in order."""
        taken = [env for env in self.queue if predicate(*env)]
        self.queue = [env for env in self.queue if not predicate(*env)]
        return taken

    def drop(self, predicate: Callable[[int, int, Message], bool] = lambda f, t, m: True) -> int:
        return len(self.take(predicate))

    def deliver(self, envelope: Envelope) -> List[object]:
        frm, to, message = envelope
        if not self.connected(frm, to) or to not in self.nodes:
            return []
        if self.drop_filter is not None and self.drop_filter(frm, to, message):
            return []
        return self.step(to, Event.Message(message))

    def deliver_one_round(self) -> int:
        """Deliver what is queued now (not what that provokes). Returns how many."""
        batch, self.queue = self.queue, []
        for envelope in batch:
            self.deliver(envelope)
        return len(batch)

    def deliver_all(self, limit: int = 100_000) -> int:
        """Deliver until the network is quiet. Returns how many messages were handled."""
        count = 0
        while self.queue:
            envelope = self.queue.pop(0)
            self.deliver(envelope)
            count += 1
            if count > limit:
                raise AssertionError("the network never went quiet")
        return count

    # -- elections ---------------------------------------------------------------------------

    def timeout(self, node_id: int) -> List[object]:
        """Tick `node_id` (alone) until its election timer fires; returns those actions.
        Nothing is delivered."""
        node = self.nodes[node_id]
        hi = self.configs[node_id].election_timeout[1]
        out: List[object] = []
        start_role, start_term = node.role, node.term
        for _ in range(2 * hi + 1):
            before = len(self.queue)
            out += self.step(node_id, Event.Tick())
            if node.role is not start_role or node.term != start_term or len(self.queue) > before:
                return out
        raise AssertionError(f"node {node_id} never timed out")

    def elect(self, node_id: int, force: bool = False) -> RaftNode:
        """Make `node_id` leader: time it out (or, with `force`, hand it a TimeoutNow as a
        leadership transfer would, which bypasses leader stickiness) and deliver everything."""
        node = self.nodes[node_id]
        if force:
            self.send(node_id, TimeoutNow(node.term, node.leader or node_id))
        else:
            self.timeout(node_id)
        self.deliver_all()
        assert node.role is Role.LEADER, f"node {node_id} did not win: {node!r}"
        return node

    def leaders(self) -> List[int]:
        return [i for i, n in self.nodes.items() if i not in self.down and n.role is Role.LEADER]

    def heartbeat(self, leader: int) -> None:
        """Tick the leader until it heartbeats, then deliver everything."""
        interval = self.configs[leader].heartbeat_interval
        self.tick(leader, interval)
        self.deliver_all()


def node_alone(
    node_id: int = 1,
    peers: Iterable[int] = (1, 2, 3),
    log=None,
    **config_kwargs,
) -> RaftNode:
    """A single node with peers that exist only as ids (tests feed it messages by hand)."""
    return RaftNode(RaftConfig(node_id, peers, **config_kwargs), log)


def make_leader(node: RaftNode, granting: Iterable[int] = ()) -> List[object]:
    """Drive a lone node (see `node_alone`) to leadership by ticking it out and feeding it the
    votes of `granting` (pre-votes first when it asks for them). Returns the actions of the
    step that made it leader."""
    from raftfast import PreVote, PreVoteReply, RequestVote, RequestVoteReply

    hi = node.config.election_timeout[1]
    for _ in range(2 * hi + 1):
        out = node.step(Event.Tick())
        if node.role is not Role.FOLLOWER:
            break
    else:
        raise AssertionError("node never campaigned")
    if node.role is Role.LEADER:
        return out
    granting = list(granting)
    if sends(out, PreVote):
        term = sends(out, PreVote)[0].term
        for peer in granting:
            out = node.step(Event.Message(PreVoteReply(term, True, peer)))
            if sends(out, RequestVote) or node.role is Role.LEADER:
                break
    if node.role is Role.LEADER:
        return out
    for peer in granting:
        out = node.step(Event.Message(RequestVoteReply(node.term, True, peer)))
        if node.role is Role.LEADER:
            return out
    raise AssertionError(f"node did not win with votes from {granting}: {node!r}")


def ack_all(node: RaftNode, actions, peers: Optional[Iterable[int]] = None) -> List[object]:
    """Answer every AppendEntries in `actions` with success from its target (optionally only
    those to `peers`). Returns the leader's actions."""
    peers = None if peers is None else set(peers)
    from raftfast import AppendEntriesReply

    out: List[object] = []
    for to, m in send_pairs(actions, AppendEntries):
        if peers is not None and to not in peers:
            continue
        last = m.prev_log_index + len(m.entries)
        out += node.step(Event.Message(AppendEntriesReply(m.term, True, to, last)))
    return out
