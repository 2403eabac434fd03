"""A random RaftLog workload and its MemoryLog model, shared by the WAL tests.

`workload(seed, n)` returns the operations and the model's state after each prefix of them, so
a test can run the operations against a WalLog, crash it anywhere, recover, and check that the
state it gets back is one the model passed through: at or after the last durable point.
"""

from __future__ import annotations

import random
from typing import Any, List, Optional, Tuple

from raftfast.log import MemoryLog
from raftfast.log._entries import EntryBatch
from raftfast.types import EntryKind, HardState, LogEntry, Membership, Snapshot

Op = Tuple[str, Any]
DURABLE_OPS = ("sync", "snapshot")
"""Operations that are durable once they return: sync() and apply_snapshot()."""


def state(log: Any) -> tuple:
    """Everything a RaftLog promises to keep, as one comparable value."""
    snap = log.snapshot()
    entries = log.entries(snap.index + 1, log.last_index())
    return (
        snap.index,
        snap.term,
        snap.config,
        bytes(snap.data),
        log.hard_state(),
        log.term_at(snap.index),
        [(e.index, e.term, int(e.kind), bytes(e.command)) for e in entries],
    )


def apply(log: Any, op: Op) -> None:
    name, arg = op
    if name == "append":
        log.append(arg)
    elif name == "append_commands":
        log.append_commands(*arg)
    elif name == "truncate":
        log.truncate(arg)
    elif name == "hard_state":
        log.set_hard_state(arg)
    elif name == "snapshot":
        log.apply_snapshot(arg)
    elif name == "sync":
        log.sync()
    else:
        raise AssertionError(f"unknown op {name}")


def _commands(rng: random.Random, n: int, big: int) -> List[bytes]:
    return [rng.randbytes(rng.choice((0, 8, 64, 64, big))) for _ in range(n)]


def _entries(rng: random.Random, model: MemoryLog, term: int, big: int) -> Any:
    first = model.last_index() + 1
    n = rng.randint(1, 12)
    commands = _commands(rng, n, big)
    terms = sorted(rng.choice((term, term, term + 1)) for _ in range(n)) if rng.random() < 0.3 else [term] * n
    kinds = [rng.choice((0, 0, 0, 1, 2)) if rng.random() < 0.3 else 0 for _ in range(n)]
    if rng.random() < 0.25:
        return EntryBatch(first, terms, bytes(kinds), commands)
    if rng.random() < 0.1:
        commands = [bytearray(c) for c in commands]  # MemoryLog converts these to bytes
    return [LogEntry(t, first + i, EntryKind(k), c) for i, (t, k, c) in enumerate(zip(terms, kinds, commands))]


def workload(seed: int, n: int, big: int = 300) -> Tuple[List[Op], List[tuple]]:
    """`n` operations and the model's states: states[k] is the state after ops[:k]."""
    rng = random.Random(seed)
    model = MemoryLog()
    ops: List[Op] = []
    states = [state(model)]
    term = 1
    for _ in range(n):
        term = max(term, model.last_term())
        last, base = model.last_index(), model.snapshot_index()
        r = rng.random()
        op: Optional[Op] = None
        if r < 0.32:
            op = ("append", _entries(rng, model, term, big))
        elif r < 0.42:
            op = ("append_commands", (term, rng.choice((0, 0, 2)), _commands(rng, rng.randint(1, 20), big)))
        elif r < 0.52 and last > base:
            op = ("truncate", rng.randint(base + 1, last))
        elif r < 0.62:
            term += rng.random() < 0.5
            op = ("hard_state", HardState(term, rng.choice((None, 1, 2, 3))))
        elif r < 0.70:
            index = rng.randint(base, last + 2)
            held = model.term_at(index)
            snap_term = held if held is not None and rng.random() < 0.75 else max(model.last_term(), term) + rng.randint(0, 1)
            config = Membership.of(rng.sample(range(1, 6), 3), rng.sample(range(6, 9), rng.randint(0, 1)))
            op = ("snapshot", Snapshot(index, snap_term, config, rng.randbytes(rng.randint(0, 40))))
        else:
            op = ("sync", None)
        apply(model, op)
        ops.append(op)
        states.append(state(model))
    return ops, states
