"""Tools for testing raftfast and systems built on it: simulation, invariants, histories.

- `SimLog`: a RaftLog whose writes are lost on `crash()` unless synced.
- `Network`: a seeded network that drops, duplicates, delays, reorders and partitions.
- `InvariantChecker` / `InvariantViolation`: Raft's safety properties, checked after every step.
- `Cluster`, `run_random`, `LivenessFailure`: the deterministic cluster simulator; a failing
  seed replays exactly (`python -m raftfast.testing.soak --seeds 1 --start SEED`).
"""

from .invariants import InvariantChecker, InvariantViolation
from .network import Network
from .simlog import SimLog
from .simulator import Cluster, Faults, KVStore, LivenessFailure, RunResult, run_random

__all__ = [
    "Cluster",
    "Faults",
    "InvariantChecker",
    "InvariantViolation",
    "KVStore",
    "LivenessFailure",
    "Network",
    "RunResult",
    "SimLog",
    "run_random",
]
