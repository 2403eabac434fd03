"""Chaos testing against real processes: `raftfast chaos` (docs/chaos.md).

- `nemesis`: the faults (kills, pauses, partitions, membership changes, leadership transfers)
  and the seeded schedule of episodes.
- `cluster`: `ChaosCluster`, the `raftfast serve` processes the nemesis works on.
- `netns`: the same cluster in network namespaces, for partitions made by the kernel.
- `workload`: concurrent clients recording a history (`raftfast.testing.history`).
- `checks`: lost acknowledged writes and replica divergence.
- `runner`: one run or a soak, and its verdicts; `command`: the CLI face.
"""

from .runner import ChaosConfig, ChaosResult, run_chaos

__all__ = ["ChaosConfig", "ChaosResult", "run_chaos"]
