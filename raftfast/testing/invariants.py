"""InvariantChecker: Raft's safety properties, checked after every step of every node.

The checker sees a node through a few read-only attributes (`id`, `role`, `term`,
`commit_index`, `last_applied`, `log`) and the actions its step returned, so it works on a real
`RaftNode` and on a hand-built stand-in alike. Each check costs O(1) per step plus O(new
entries), so it can run on every step of thousands of simulations:

- election safety: at most one leader per term, ever;
- leader append-only: while a node leads a term, its log only grows;
- log matching: an entry (index, term) has one content and one predecessor term everywhere, in
  every log at any time (by induction, equal (index, term) implies equal prefixes);
- leader completeness: a leader of term T holds every entry committed in an earlier term;
- state machine safety: no two nodes apply different (term, command) at an index, restore
  different snapshots at an index, or commit different terms at an index;
- apply order: per node, Apply indexes strictly increase and skip only NOOP/CONFIG entries,
  except a RestoreSnapshot, which jumps forward; a restarted node replays from its snapshot;
- durability: a node never returns a Send while it has unsynced writes (logs with `pending`);
- read linearizability: a ReadReady index covers everything committed before the read began.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Protocol, Sequence, Tuple

from ..actions import Action
from ..types import EntryKind, Index, NodeId, Role, Term


class InvariantViolation(AssertionError):
    """A safety property failed. `invariant` names it; the message carries seed, step and tick."""

    def __init__(
        self, invariant: str, detail: str, *, seed: Optional[int], step: int, tick: Optional[int]
    ) -> None:
        where = f"step {step}" + (f", tick {tick}" if tick is not None else "")
        super().__init__(f"{invariant} violated (seed {seed}, {where}): {detail}")
        self.invariant = invariant
        self.detail = detail
        self.seed = seed
        self.step = step
        self.tick = tick


class ObservedNode(Protocol):
    """What the checker reads from a node (RaftNode satisfies it)."""

    @property
    def id(self) -> NodeId: ...

    @property
    def role(self) -> Role: ...

    @property
    def term(self) -> Term: ...

    @property
    def commit_index(self) -> Index: ...

    @property
    def last_applied(self) -> Index: ...

    @property
    def log(self) -> Any: ...


class _Leadership:
    """What the checker remembers about one node leading one term."""

    __slots__ = ("term", "last", "last_command", "marks_seen", "complete_through")

    def __init__(self, term: Term) -> None:
        self.term = term
        self.last = -1  # the log's last index at the previous step; -1 before the first
        self.last_command: Optional[bytes] = None
        self.marks_seen = 0
        self.complete_through = -1  # highest earlier-term commit verified in this leader's log


class InvariantChecker:
    """Call `started(node)` when a node starts or restarts, `observe(node, actions)` after each
    of its steps, `crashed(node_id)` when it crashes. Set `tick` to label messages with time."""

    def __init__(self, seed: Optional[int] = None) -> None:
        self.seed = seed
        self.step = 0
        self.tick: Optional[int] = None
        self._leaders: Dict[Term, NodeId] = {}
        self._last_leader_term: Term = 0
        self._lead: Dict[NodeId, _Leadership] = {}
        # Log matching: per node, the terms of its log by index (None below a snapshot), and
        # every entry ever seen: (index, term) -> (predecessor term, kind, command).
        self._terms: Dict[NodeId, List[Optional[Term]]] = {}
        self._entries: Dict[Tuple[Index, Term], Tuple[Optional[Term], int, bytes]] = {}
        # Commitment: the term of each committed index (None if no node could tell), and marks
        # (term of the node that advanced it, new max commit index) in the order they happened.
        self._committed: List[Optional[Term]] = [0]
        self._marks: List[Tuple[Term, Index]] = []
        self._node_commit: Dict[NodeId, Index] = {}
        self._writes: Dict[NodeId, Optional[int]] = {}
        # State machine: Apply and RestoreSnapshot records by index, per-node apply position.
        self._applies: Dict[Index, Tuple[Term, bytes, NodeId]] = {}
        self._restores: Dict[Index, Tuple[Term, NodeId]] = {}
        self._snapshot_data: Dict[Index, Tuple[bytes, NodeId]] = {}
        self._applied: Dict[NodeId, Index] = {}
        self._reads: Dict[Hashable, Index] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def started(self, node: ObservedNode) -> None:
        """`node` (re)started from its log: its state machine restarts from the log's snapshot,
        whose data must match any snapshot recorded at that index."""
        nid = node.id
        self.crashed(nid)
        snapshot = node.log.snapshot()
        self._applied[nid] = snapshot.index
        self._node_commit[nid] = 0
        if snapshot.index:
            self._check_snapshot_data(nid, snapshot.index, snapshot.data)
        self._track_log(node)

    def crashed(self, node_id: NodeId) -> None:
        """Forget what the node held in memory; what it had applied stays recorded."""
        self._lead.pop(node_id, None)
        self._terms.pop(node_id, None)
        self._node_commit.pop(node_id, None)
        self._applied.pop(node_id, None)
        self._writes.pop(node_id, None)

    def snapshot_taken(self, node_id: NodeId, index: Index, data: bytes) -> None:
        """The application of `node_id` serialised its state through `index` as `data`."""
        self._check_snapshot_data(node_id, index, data)

    def read_issued(self, request_id: Hashable) -> None:
        """A client is about to issue `Event.Read(request_id)`: its ReadReady index must cover
        every entry committed by now."""
        self._reads[request_id] = self.max_commit

    @property
    def last_leader_term(self) -> Term:
        """The highest term in which any node has been seen leading (0 before any leader)."""
        return self._last_leader_term

    @property
    def max_commit(self) -> Index:
        """The highest commit index any node has reported."""
        return len(self._committed) - 1

    def committed_term(self, index: Index) -> Optional[Term]:
        return self._committed[index] if index < len(self._committed) else None

    # -- the per-step check ----------------------------------------------------------------

    def observe(self, node: ObservedNode, actions: Sequence[object]) -> None:
        self.step += 1
        nid = node.id
        if nid not in self._applied:
            self.started(node)
        pos = self._applied[nid]
        if actions:
            pos = self._check_actions(node, actions, pos)
        applied = node.last_applied
        if pos != applied:
            if pos > applied:
                self._fail(
                    "apply order",
                    f"node {nid} emitted Apply {pos} but reports last_applied {applied}",
                )
            self._check_skipped(node, pos + 1, applied)
        self._applied[nid] = applied
        lead = self._lead.get(nid)
        is_leader = node.role == Role.LEADER
        if lead is not None and (not is_leader or lead.term != node.term):
            del self._lead[nid]
            lead = None
        new_leader = is_leader and lead is None
        if new_leader:
            lead = self._lead[nid] = _Leadership(node.term)
            holder = self._leaders.setdefault(node.term, nid)
            if holder != nid:
                self._fail("election safety", f"nodes {holder} and {nid} both led term {node.term}")
            self._last_leader_term = max(self._last_leader_term, node.term)
        # Logs that count their writes (SimLog) let an unchanged log skip the walk.
        writes = getattr(node.log, "writes", None)
        changed = writes is None or writes != self._writes.get(nid)
        diverged = self._track_log(node) if changed else 0
        self._writes[nid] = writes
        if lead is not None and (changed or new_leader):
            self._check_append_only(node, lead, diverged)
        if node.commit_index != self._node_commit[nid] or node.commit_index >= len(self._committed):
            self._check_commit(node)
        if lead is not None and lead.marks_seen != len(self._marks):
            self._check_completeness(node, lead)

    # -- checks ----------------------------------------------------------------------------

    def _check_actions(self, node: ObservedNode, actions: Sequence[object], pos: Index) -> Index:
        """Check the actions in order; returns the apply position they leave the node at."""
        nid, log = node.id, node.log
        sent = False
        for action in actions:
            kind = type(action)
            if kind is Action.Send:
                sent = True
            elif kind is Action.Apply:
                index, term = action.index, action.term  # type: ignore[attr-defined]
                if index <= pos:
                    self._fail(
                        "apply order",
                        f"node {nid} applied index {index} after index {pos} (repeat or backwards)",
                    )
                self._check_skipped(node, pos + 1, index - 1)
                pos = index
                if log.snapshot_index() < index <= log.last_index():
                    entry = log.entry(index)
                    if (entry.term, entry.kind, entry.command) != (term, EntryKind.NORMAL, action.command):  # type: ignore[attr-defined]
                        self._fail(
                            "state machine safety",
                            f"node {nid} applied (index {index}, term {term}, "
                            f"{action.command!r}) but its log holds {entry}",  # type: ignore[attr-defined]
                        )
                self._record_apply(nid, index, term, action.command)  # type: ignore[attr-defined]
            elif kind is Action.RestoreSnapshot:
                index = action.index  # type: ignore[attr-defined]
                if index < pos:
                    self._fail(
                        "apply order",
                        f"node {nid} restored a snapshot at {index} after applying through {pos}",
                    )
                pos = index
                self._record_restore(nid, index, action.term, action.data)  # type: ignore[attr-defined]
            elif kind is Action.ReadReady:
                self._check_read(node, action)
        if sent and getattr(log, "pending", 0):
            self._fail(
                "durability",
                f"node {nid} returned Send actions with {log.pending} unsynced log writes",
            )
        return pos

    def _check_skipped(self, node: ObservedNode, lo: Index, hi: Index) -> None:
        """Entries lo..hi were applied without an Apply: each must be a NOOP or CONFIG entry
        (entries already compacted away cannot be inspected and are taken on trust)."""
        log = node.log
        for index in range(max(lo, log.snapshot_index() + 1), min(hi, log.last_index()) + 1):
            if log.entry(index).kind == EntryKind.NORMAL:
                self._fail(
                    "apply order",
                    f"node {node.id} applied past index {index}, a NORMAL entry, without an Apply",
                )

    def _record_apply(self, nid: NodeId, index: Index, term: Term, command: bytes) -> None:
        seen = self._applies.get(index)
        if seen is None:
            self._applies[index] = (term, command, nid)
        elif seen[0] != term or seen[1] != command:
            self._fail(
                "state machine safety",
                f"index {index}: node {seen[2]} applied (term {seen[0]}, {seen[1]!r}) but node "
                f"{nid} applied (term {term}, {command!r})",
            )
        restored = self._restores.get(index)
        if restored is not None and restored[0] != term:
            self._fail(
                "state machine safety",
                f"index {index}: node {restored[1]} restored a snapshot of term {restored[0]} but "
                f"node {nid} applied an entry of term {term}",
            )

    def _record_restore(self, nid: NodeId, index: Index, term: Term, data: bytes) -> None:
        seen = self._applies.get(index)
        if seen is not None and seen[0] != term:
            self._fail(
                "state machine safety",
                f"index {index}: node {nid} restored a snapshot of term {term} but node {seen[2]} "
                f"applied an entry of term {seen[0]}",
            )
        restored = self._restores.setdefault(index, (term, nid))
        if restored[0] != term:
            self._fail(
                "state machine safety",
                f"index {index}: nodes {restored[1]} and {nid} restored snapshots of terms "
                f"{restored[0]} and {term}",
            )
        self._check_snapshot_data(nid, index, data)

    def _check_snapshot_data(self, nid: NodeId, index: Index, data: bytes) -> None:
        seen = self._snapshot_data.setdefault(index, (data, nid))
        if seen[0] != data:
            self._fail(
                "state machine safety",
                f"snapshots at index {index} differ: node {seen[1]} has {seen[0][:60]!r}, node "
                f"{nid} has {data[:60]!r}",
            )

    def _check_read(self, node: ObservedNode, ready: Any) -> None:
        floor = self._reads.pop(ready.request_id, None)
        if floor is not None and ready.index < floor:
            self._fail(
                "read linearizability",
                f"node {node.id} served read {ready.request_id!r} at index {ready.index}, but "
                f"index {floor} was committed before the read began",
            )
        if node.last_applied < ready.index:
            self._fail(
                "read linearizability",
                f"node {node.id} declared read {ready.request_id!r} ready at index {ready.index} "
                f"with last_applied {node.last_applied}",
            )

    def _track_log(self, node: ObservedNode) -> Index:
        """Register the entries the node's log gained since its last step (log matching) and
        return the highest index below which nothing changed."""
        nid, log = node.id, node.log
        terms = self._terms.get(nid)
        if terms is None:
            terms = self._terms[nid] = [0]
        snap = log.snapshot_index()
        last = log.last_index()
        term_at = log.term_at
        j = min(len(terms) - 1, last)
        while j > snap and terms[j] != term_at(j):
            j -= 1
        diverged = j
        if j < snap:
            j = snap
        del terms[j + 1 :]
        terms.extend([None] * (j + 1 - len(terms)))
        prev = terms[j] = term_at(j)
        if last > j:
            known = self._entries
            for entry in log.entries(j + 1, last):
                record = (prev, int(entry.kind), entry.command)
                seen = known.setdefault((entry.index, entry.term), record)
                if seen != record:
                    self._fail(
                        "log matching",
                        f"node {nid} holds entry (index {entry.index}, term {entry.term}) as "
                        f"(prev term {prev}, kind {int(entry.kind)}, {entry.command!r}), seen "
                        f"elsewhere as (prev term {seen[0]}, kind {seen[1]}, {seen[2]!r})",
                    )
                prev = entry.term
                terms.append(prev)
        return diverged

    def _check_append_only(self, node: ObservedNode, lead: _Leadership, diverged: Index) -> None:
        log = node.log
        last = log.last_index()
        if lead.last >= 0:
            # A truncation that reaches back to the previous last entry replaces it, so checking
            # that one entry (and the term walk below it) catches any rewrite of the log.
            if last < lead.last or diverged < lead.last:
                self._fail(
                    "leader append-only",
                    f"node {node.id}, leader of term {lead.term}, rewrote its log from index "
                    f"{min(diverged, last) + 1} (last index was {lead.last}, now {last})",
                )
            if lead.last > log.snapshot_index() and lead.last_command is not None:
                command = log.entry(lead.last).command
                if command != lead.last_command:
                    self._fail(
                        "leader append-only",
                        f"node {node.id}, leader of term {lead.term}, replaced entry {lead.last}: "
                        f"{lead.last_command!r} became {command!r}",
                    )
        lead.last = last
        lead.last_command = log.entry(last).command if last > log.snapshot_index() else None

    def _check_commit(self, node: ObservedNode) -> None:
        nid, log = node.id, node.log
        commit = node.commit_index
        before = self._node_commit[nid]
        if commit < before:
            self._fail(
                "state machine safety",
                f"node {nid} commit index went back from {before} to {commit}",
            )
        committed = self._committed
        if commit >= len(committed):
            committed.extend(log.term_at(i) for i in range(len(committed), commit + 1))
            self._marks.append((node.term, commit))
        elif commit > before:
            term, expected = log.term_at(commit), committed[commit]
            if term is not None and expected is not None and term != expected:
                self._fail(
                    "state machine safety",
                    f"node {nid} committed index {commit} with term {term}, but index {commit} "
                    f"was committed with term {expected}",
                )
        self._node_commit[nid] = commit

    def _check_completeness(self, node: ObservedNode, lead: _Leadership) -> None:
        marks = self._marks
        through = lead.complete_through
        for term, index in marks[lead.marks_seen :]:
            if term < lead.term and index > through:
                through = index
        lead.marks_seen = len(marks)
        if through <= lead.complete_through:
            return
        lead.complete_through = through
        log = node.log
        snap = log.snapshot_index()
        # Checking the highest such entry suffices: log matching covers the prefix. Below the
        # snapshot the snapshot point stands for it.
        at = through if through >= snap else snap
        expected = self.committed_term(at)
        held = log.term_at(at)
        if through > log.last_index() or (expected is not None and held != expected):
            self._fail(
                "leader completeness",
                f"node {node.id}, leader of term {lead.term}, lacks committed entry {at} (term "
                f"{expected}); its log holds term {held} there (last index {log.last_index()})",
            )

    def _fail(self, invariant: str, detail: str) -> None:
        raise InvariantViolation(invariant, detail, seed=self.seed, step=self.step, tick=self.tick)
