"""Read latency of a running cluster: one client, one linearizable get at a time.

`run_bench` (raftfast.kv.bench) measures writes; this is its counterpart for reads, kept
separate so the two can evolve apart. Gets go to the leader and are answered through ReadIndex
(a round of heartbeats confirms leadership before the read is served), so a read's latency is
one client round trip plus one peer round trip, with no fsync.

    result = measure_reads(cluster.client_addresses, duration=2.0)
    result.percentiles[50.0]  # microseconds
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from ..runtime.loop import run
from .bench import PERCENTILES
from .client import KVClient
from .errors import KVError

__all__ = ["ReadResult", "measure_reads"]


@dataclass
class ReadResult:
    reads: int  # reads answered in the measured window
    errors: int
    elapsed: float  # seconds measured
    latencies_us: np.ndarray  # each answered read's latency, microseconds

    @property
    def throughput(self) -> float:
        return self.reads / self.elapsed if self.elapsed else 0.0

    @property
    def percentiles(self) -> Dict[float, float]:
        if not len(self.latencies_us):
            return {p: float("nan") for p in PERCENTILES}
        return dict(zip(PERCENTILES, map(float, np.percentile(self.latencies_us, PERCENTILES))))

    def to_dict(self) -> dict:
        return {
            "reads": self.reads,
            "errors": self.errors,
            "elapsed_s": self.elapsed,
            "reads_per_s": self.throughput,
            "latency_us": {f"p{p:g}": v for p, v in self.percentiles.items()},
        }


def measure_reads(targets: List[str], *, duration: float = 2.0, warmup: float = 0.3, keys: int = 64,
                  value_size: int = 64, max_reads: int = 1_000_000, timeout: float = 5.0) -> ReadResult:
    """Write `keys` keys, then get them round-robin, one at a time, for `warmup` + `duration`
    seconds (at most `max_reads` measured reads); latencies are kept for the measured part."""
    if duration <= 0:
        raise ValueError("duration must be positive")
    return run(_measure(list(targets), duration, warmup, keys, value_size, max_reads, timeout))


async def _measure(targets: List[str], duration: float, warmup: float, keys: int, value_size: int,
                   max_reads: int, timeout: float) -> ReadResult:
    names = [b"read-%06d" % i for i in range(max(1, keys))]
    value = bytes(range(256)) * (value_size // 256 + 1)
    value = value[:value_size]
    latencies = array("q")
    errors = 0
    async with KVClient(targets, timeout=timeout) as client:
        for name in names:
            await client.put(name, value)
        clock = time.perf_counter_ns
        i = 0
        end_warmup = time.perf_counter() + warmup
        while time.perf_counter() < end_warmup:
            await client.get(names[i % len(names)])
            i += 1
        started = time.perf_counter()
        deadline = started + duration
        measured = 0
        while measured < max_reads:
            name = names[i % len(names)]
            i += 1
            begin = clock()
            try:
                got: Optional[bytes] = await client.get(name)
            except KVError:
                errors += 1
            else:
                latencies.append(clock() - begin)
                if got != value:
                    errors += 1
            measured += 1
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - started
    return ReadResult(len(latencies), errors, elapsed, np.frombuffer(latencies, dtype=np.int64) / 1000.0)
