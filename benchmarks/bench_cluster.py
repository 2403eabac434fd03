"""asv: the whole system, a short run of a real local cluster (issue 5, item 5).

`setup_cache` starts 3 `raftfast serve` processes on loopback (WalLog, fsync on, in a fresh
temporary directory), drives them for a few seconds with `raftfast.kv.bench.run_bench` (64
pipelined clients x 128 writes in flight, 64-byte values, one load process), then measures
one-at-a-time linearizable gets (`raftfast.kv.readbench.measure_reads`), stops the cluster and
returns the figures; the four `track_*` read them, so one cluster run feeds them all.
Latency statistics are numpy percentiles over every acknowledged request.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np

from raftfast.kv.bench import BenchConfig, run_bench
from raftfast.kv.readbench import measure_reads
from raftfast.runtime.cluster import LocalCluster

WRITE_SECONDS = 3.0
WARMUP_SECONDS = 1.0
READ_SECONDS = 1.5


def cluster_run(nodes: int = 3, write_seconds: float = WRITE_SECONDS, read_seconds: float = READ_SECONDS,
                data_dir: str | None = None) -> dict:
    """One local-cluster run: write throughput and latency under load, then read latency."""
    base = tempfile.mkdtemp(prefix="raftfast-asv-", dir=data_dir)
    cluster = _start(nodes, base)
    try:
        config = BenchConfig(nodes=nodes, duration=write_seconds, warmup=WARMUP_SECONDS,
                             targets=cluster.client_addresses)
        writes = run_bench(config)
        reads = measure_reads(cluster.client_addresses, duration=read_seconds)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    write_p50, write_p99 = np.percentile(writes.latencies_us, [50, 99]) / 1000.0
    read_p50 = float(np.percentile(reads.latencies_us, 50)) / 1000.0
    return {
        "committed_writes_per_s": writes.throughput,
        "write_latency_p50_ms": float(write_p50),
        "write_latency_p99_ms": float(write_p99),
        "read_latency_p50_ms": read_p50,
        "write_errors": writes.errors,
        "read_errors": reads.errors,
    }


def _start(nodes: int, base: str) -> LocalCluster:
    """A started cluster; one more try (on fresh ports) if a node fails to start, which on a
    shared machine can be a free port taken by another process before the node bound it."""
    for attempt in (1, 2):
        cluster = LocalCluster(nodes, data_dir=os.path.join(base, f"try-{attempt}"), base_port=0)
        try:
            cluster.start()
            return cluster
        except (RuntimeError, TimeoutError) as exc:
            cluster.stop()
            if attempt == 2:
                raise
            print(f"local cluster failed to start ({exc}); trying once more", file=sys.stderr)
    raise AssertionError("unreachable")


class LocalClusterRun:
    timeout = 240  # covers setup_cache: start, 1 s warm-up, 3 s of writes, 1.5 s of reads, stop

    def setup_cache(self):
        return cluster_run()

    def track_committed_writes_per_s(self, result):
        return result["committed_writes_per_s"]

    track_committed_writes_per_s.unit = "writes/s"

    def track_write_latency_p50_ms(self, result):
        return result["write_latency_p50_ms"]

    track_write_latency_p50_ms.unit = "ms"

    def track_write_latency_p99_ms(self, result):
        return result["write_latency_p99_ms"]

    track_write_latency_p99_ms.unit = "ms"

    def track_read_latency_p50_ms(self, result):
        return result["read_latency_p50_ms"]

    track_read_latency_p50_ms.unit = "ms"
