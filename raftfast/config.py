"""RaftConfig: a node's identity, initial peers and tuning knobs, validated up front."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Optional, Tuple

from .types import NodeId

MAX_NODE_ID = (1 << 63) - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, minimum: int) -> None:
    if not _is_int(value):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:  # type: ignore[operator]
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class RaftConfig:
    """Configuration of one node. Times are logical ticks; invalid values raise ValueError.

    `election_timeout=(lo, hi)`: each election timer is drawn uniformly from `[lo, hi)`.
    `max_inflight`: AppendEntries messages a leader keeps in flight per peer before waiting.
    `max_batch`/`max_batch_bytes`: entries and payload bytes per AppendEntries (at least one
    entry is always sent, however large).
    `snapshot_bytes=N > 0`: the node also emits `Action.Snapshot` once the commands applied
    since the last hint total N bytes (entries may carry one write or thousands, so an entry
    count alone does not bound the log's memory); 0 disables it.
    """

    id: NodeId
    peers: Tuple[NodeId, ...] = ()
    election_timeout: Tuple[int, int] = (10, 20)
    heartbeat_interval: int = 3
    max_batch: int = 64
    snapshot_threshold: int = 0
    seed: Optional[int] = None
    pre_vote: bool = True
    check_quorum: bool = True
    join: bool = False
    max_inflight: int = 256
    max_batch_bytes: int = 1 << 20
    max_entry_bytes: int = 64 << 20
    snapshot_bytes: int = 0

    def __init__(
        self,
        id: NodeId,
        peers: Iterable[NodeId] = (),
        *,
        election_timeout: Tuple[int, int] = (10, 20),
        heartbeat_interval: int = 3,
        max_batch: int = 64,
        snapshot_threshold: int = 0,
        seed: Optional[int] = None,
        pre_vote: bool = True,
        check_quorum: bool = True,
        join: bool = False,
        max_inflight: int = 256,
        max_batch_bytes: int = 1 << 20,
        max_entry_bytes: int = 64 << 20,
        snapshot_bytes: int = 0,
    ) -> None:
        _check_int("id", id, 1)
        if id > MAX_NODE_ID:
            raise ValueError(f"id must be < 2**63, got {id!r}")
        try:
            peer_list = list(peers)
        except TypeError:
            raise ValueError(f"peers must be an iterable of node ids, got {peers!r}") from None
        seen = set()
        for peer in peer_list:
            _check_int("peers", peer, 1)
            if peer > MAX_NODE_ID:
                raise ValueError(f"peers: node id must be < 2**63, got {peer!r}")
            if peer in seen:
                raise ValueError(f"peers lists node {peer} twice")
            seen.add(peer)
        seen.discard(id)
        try:
            lo, hi = election_timeout
        except (TypeError, ValueError):
            raise ValueError(
                f"election_timeout must be a (lo, hi) pair of ticks, got {election_timeout!r}"
            ) from None
        _check_int("election_timeout", lo, 1)
        _check_int("election_timeout", hi, 1)
        if hi <= lo:
            raise ValueError(f"election_timeout range [{lo}, {hi}) is empty or inverted")
        _check_int("heartbeat_interval", heartbeat_interval, 1)
        if heartbeat_interval >= lo:
            raise ValueError(
                f"heartbeat_interval ({heartbeat_interval}) must be below the election timeout ({lo})"
            )
        _check_int("max_batch", max_batch, 1)
        _check_int("snapshot_threshold", snapshot_threshold, 0)
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        for name, flag in (("pre_vote", pre_vote), ("check_quorum", check_quorum), ("join", join)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        _check_int("max_inflight", max_inflight, 1)
        _check_int("max_batch_bytes", max_batch_bytes, 1)
        _check_int("max_entry_bytes", max_entry_bytes, 1)
        _check_int("snapshot_bytes", snapshot_bytes, 0)
        setattr_ = object.__setattr__
        setattr_(self, "id", id)
        setattr_(self, "peers", tuple(sorted(seen)))
        setattr_(self, "election_timeout", (lo, hi))
        setattr_(self, "heartbeat_interval", heartbeat_interval)
        setattr_(self, "max_batch", max_batch)
        setattr_(self, "snapshot_threshold", snapshot_threshold)
        setattr_(self, "seed", seed)
        setattr_(self, "pre_vote", pre_vote)
        setattr_(self, "check_quorum", check_quorum)
        setattr_(self, "join", join)
        setattr_(self, "max_inflight", max_inflight)
        setattr_(self, "max_batch_bytes", max_batch_bytes)
        setattr_(self, "max_entry_bytes", max_entry_bytes)
        setattr_(self, "snapshot_bytes", snapshot_bytes)

    # -- raft-io spellings -------------------------------------------------------------------

    @classmethod
    def new(cls, id: NodeId, peers: Iterable[NodeId] = ()) -> "RaftConfig":
        return cls(id, peers)

    @classmethod
    def single(cls, id: NodeId) -> "RaftConfig":
        return cls(id, ())

    def _with(self, **changes) -> "RaftConfig":
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(changes)
        return RaftConfig(values.pop("id"), values.pop("peers"), **values)

    def with_election_timeout(self, lo: int, hi: int) -> "RaftConfig":
        return self._with(election_timeout=(lo, hi))

    def with_heartbeat_interval(self, n: int) -> "RaftConfig":
        return self._with(heartbeat_interval=n)

    def with_max_batch(self, n: int) -> "RaftConfig":
        return self._with(max_batch=n)

    def with_snapshot_threshold(self, n: int) -> "RaftConfig":
        return self._with(snapshot_threshold=n)

    def with_seed(self, s: Optional[int]) -> "RaftConfig":
        return self._with(seed=s)

    def replace(self, **changes) -> "RaftConfig":
        """A copy with `changes` applied (validated like the constructor)."""
        return self._with(**changes)
