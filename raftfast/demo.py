"""An in-process demo cluster: elect a leader, commit through a partition, print a summary.

    python -m raftfast.demo [--nodes 5] [--proposals 2000] [--seed 1]

Nodes are stepped in one process with in-memory message passing, so the run is deterministic
for a given seed. It shows the protocol, not the runtime: `raftfast bench` drives real processes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Set, Tuple

from . import IMPLEMENTATION, Action, Event, RaftConfig, RaftNode, Role


class DemoCluster:
    """Nodes 1..n with reliable, in-order links that can be cut by a partition."""

    def __init__(self, n: int, seed: int) -> None:
        ids = range(1, n + 1)
        self.nodes: Dict[int, RaftNode] = {
            i: RaftNode(RaftConfig(i, ids, seed=seed * 1000 + i)) for i in ids
        }
        self.inbox: Dict[int, List[object]] = {i: [] for i in ids}
        self.applied: Dict[int, List[Tuple[int, bytes]]] = {i: [] for i in ids}
        self.cut: Set[Tuple[int, int]] = set()
        self.messages = 0

    def partition(self, *groups: Set[int]) -> None:
        self.cut = {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}

    def heal(self) -> None:
        self.cut = set()

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        return max(leaders, key=lambda n: n.term) if leaders else None

    def turn(self, proposals: List[bytes] = ()) -> int:
        """One round: every node steps its inbox (plus a tick); returns proposals accepted."""
        accepted = 0
        for i, node in self.nodes.items():
            events: List[object] = [Event.Tick()]
            events.extend(Event.Message(m) for m in self.inbox[i])
            self.inbox[i] = []
            if proposals and node is self.leader():
                events.extend(Event.Propose(p) for p in proposals)
            for action in node.step_many(events):
                kind = type(action)
                if kind is Action.Send:
                    if (i, action.to) not in self.cut and action.to in self.inbox:
                        self.inbox[action.to].append(action.message)
                        self.messages += 1
                elif kind is Action.Apply:
                    self.applied[i].append((action.index, action.command))
            if proposals and node is self.leader():
                accepted = len(proposals)
        return accepted

    def run_until(self, predicate, max_turns: int = 1000) -> int:
        for turn in range(max_turns):
            if predicate():
                return turn
            self.turn()
        raise RuntimeError("the cluster did not get there in time")


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftfast demo", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (3..9, default 5)")
    parser.add_argument("--proposals", type=int, default=2000, help="proposals per phase")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 3 <= args.nodes <= 9:
        parser.error("--nodes must be between 3 and 9")
    if args.proposals < 1:
        parser.error("--proposals must be positive")

    from rich.console import Console
    from rich.table import Table

    console = Console()
    cluster = DemoCluster(args.nodes, args.seed)
    started = time.perf_counter()
    turns = cluster.run_until(lambda: cluster.leader() is not None)
    first = cluster.leader()
    console.print(f"[bold]1.[/] node {first.id} elected leader in term {first.term} after {turns} ticks")

    def propose_all(tag: str) -> None:
        batch = 64
        sent = 0
        while sent < args.proposals:
            chunk = [f"{tag}-{k}".encode() for k in range(sent, min(args.proposals, sent + batch))]
            sent += cluster.turn(chunk)

    propose_all("before")
    target = first.log.last_index()
    cluster.run_until(lambda: all(n.commit_index >= target for n in cluster.nodes.values()))
    console.print(f"[bold]2.[/] committed {args.proposals} proposals on all {args.nodes} nodes")

    majority = set(range(1, args.nodes + 1)) - {first.id}
    cluster.partition({first.id}, majority)
    cluster.run_until(lambda: (l := cluster.leader()) is not None and l.id != first.id and l.term > first.term)
    second = cluster.leader()
    console.print(
        f"[bold]3.[/] partitioned leader {first.id} away; node {second.id} took over in term {second.term}"
        f" (old leader now {first.role.name.lower()})"
    )
    propose_all("during")
    target = second.log.last_index()
    cluster.run_until(lambda: all(cluster.nodes[i].commit_index >= target for i in majority))
    console.print(f"[bold]4.[/] majority committed {args.proposals} more proposals during the partition")

    cluster.heal()
    cluster.run_until(lambda: cluster.nodes[first.id].commit_index >= target)
    console.print(f"[bold]5.[/] healed; node {first.id} caught up to commit index {target}")
    elapsed = time.perf_counter() - started

    reference = cluster.applied[second.id]
    consistent = all(log == reference[: len(log)] for log in cluster.applied.values())
    table = Table(title=f"raftfast demo ({IMPLEMENTATION} build, seed {args.seed})")
    for column in ("node", "role", "term", "commit", "applied entries"):
        table.add_column(column, justify="right")
    for i, node in cluster.nodes.items():
        table.add_row(str(i), node.role.name.lower(), str(node.term), str(node.commit_index), str(len(cluster.applied[i])))
    console.print(table)
    console.print(
        f"{cluster.messages:,} messages, {elapsed:.2f} s; applied sequences "
        + ("[green]identical on every node[/]" if consistent else "[red]DIVERGED[/]")
    )
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())
