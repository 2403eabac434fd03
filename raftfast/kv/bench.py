"""The measurement behind `raftfast bench`: start a local cluster (or use running targets),
drive it with pipelined writes from load processes, and return a `BenchResult`.

Closed loop (the default) measures the maximum throughput. With `rate` the load is open loop at
that many writes/s; with `rate_fraction` a short closed-loop probe first measures the maximum,
then the open loop runs at that fraction of it on the same cluster.

Output (tables, JSON, plots) is the caller's business: `run_bench` only measures, so the CLI,
plots and asv benchmarks can share it.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional

import numpy as np

from ..runtime.cluster import LocalCluster
from ..security.credentials import ClientCredentials
from ..security.layout import CertDir
from .loadgen import LoadReport, LoadSpec, load_process_main

__all__ = ["BenchConfig", "BenchResult", "PERCENTILES", "PROBE_DURATION", "KEPT_UP", "run_bench"]

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
PROBE_DURATION = 5.0  # seconds of the closed-loop probe before `rate_fraction` (at most `duration`)
KEPT_UP = 0.95  # the cluster kept up with an open loop that achieved this share of the offered rate

Progress = Callable[[float, int, int], None]
"""progress(seconds measured so far, writes completed, errors)"""

Phase = Callable[[str, float], None]
"""phase(what is measured now, its duration in seconds): called as each run starts"""


@dataclass
class BenchConfig:
    nodes: int = 3
    clients: int = 64
    # writes in flight per client: 64 x 128 = 8,192 in all, enough for the three nodes and the
    # generator to work on different batches at once (64 x 32 left the 2 cores a third idle)
    depth: int = 128
    duration: float = 10.0
    warmup: float = 1.0
    value_size: int = 64
    keys: int = 100_000
    targets: List[str] = field(default_factory=list)  # running cluster's client addresses
    load_processes: int = 1
    serve_args: List[str] = field(default_factory=list)  # extra `raftfast serve` flags
    data_dir: Optional[str] = None  # where the local cluster's temporary directory goes
    tls_dir: Optional[str] = None  # certificates from `raftfast certs init`: TLS on, client certificate
    rate: Optional[float] = None  # open loop: writes/s offered, spread over the clients
    rate_fraction: Optional[float] = None  # open loop at this fraction (0..1] of a probed maximum

    @classmethod
    def one_at_a_time(cls, **changes) -> "BenchConfig":
        """One client with one write in flight: the latency configuration."""
        return cls(clients=1, depth=1, load_processes=1, **changes)


@dataclass
class BenchResult:
    config: BenchConfig
    writes: int  # committed (acknowledged) writes in the measured window
    errors: int
    elapsed: float  # seconds measured
    latencies_us: np.ndarray  # every acknowledged write's latency, microseconds
    per_second: List[int]  # writes completed in each whole second of the window
    cpu: Dict[int, float]  # node id -> CPU use in the window, percent of one core
    load_cpu: float  # the load processes' CPU use, percent of one core (summed)
    # open loop only (offered_rate None: closed loop): writes due in the window, those that
    # waited for the in-flight cap, those unacknowledged after the drain (latency a lower bound)
    offered_rate: Optional[float] = None
    scheduled: int = 0
    held_back: int = 0
    unfinished: int = 0
    probe: Optional["BenchResult"] = None  # rate_fraction: the closed-loop run that found the maximum
    pacer_lag_us: List[float] = field(default_factory=list)  # p50, p99, max lateness of the generator's wakeups

    @property
    def max_throughput(self) -> Optional[float]:
        """The probed maximum writes/s the offered rate is a fraction of (rate_fraction only)."""
        return self.probe.throughput if self.probe is not None else None

    @property
    def kept_up(self) -> Optional[bool]:
        """Open loop: did the cluster achieve (nearly) the offered rate and finish every write due
        in the window? None for a closed loop."""
        if self.offered_rate is None:
            return None
        return self.throughput >= KEPT_UP * self.offered_rate and self.unfinished == 0

    @property
    def throughput(self) -> float:
        return self.writes / self.elapsed if self.elapsed else 0.0

    @property
    def percentiles(self) -> Dict[float, float]:
        if not len(self.latencies_us):
            return {p: float("nan") for p in PERCENTILES}
        values = np.percentile(self.latencies_us, PERCENTILES)
        return dict(zip(PERCENTILES, map(float, values)))

    @property
    def cpu_per_write(self) -> Optional[float]:
        """CPU microseconds per committed write, nodes and load generator together (None
        when the nodes' CPU is unknown, as with --target)."""
        if not self.cpu or not self.writes:
            return None
        return (sum(self.cpu.values()) + self.load_cpu) / 100.0 * self.elapsed / self.writes * 1e6

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "writes": self.writes,
            "errors": self.errors,
            "elapsed_s": self.elapsed,
            "throughput_per_s": self.throughput,
            "latency_us": {f"p{p:g}": v for p, v in self.percentiles.items()},
            "latency_mean_us": float(self.latencies_us.mean()) if len(self.latencies_us) else None,
            "per_second": self.per_second,
            "cpu_percent": {str(k): v for k, v in self.cpu.items()},
            "load_cpu_percent": self.load_cpu,
            "cpu_us_per_write": self.cpu_per_write,
            "mode": "closed" if self.offered_rate is None else "open",
            "offered_per_s": self.offered_rate,
            "scheduled": self.scheduled,
            "held_back": self.held_back,
            "pacer_lag_us": dict(zip(("p50", "p99", "max"), self.pacer_lag_us)),
            "unfinished": self.unfinished,
            "kept_up": self.kept_up,
            "max_throughput_per_s": self.max_throughput,
            "probe": self.probe.to_dict() if self.probe is not None else None,
        }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_bench(config: BenchConfig, progress: Optional[Progress] = None,
              phase: Optional[Phase] = None) -> BenchResult:
    cluster: Optional[LocalCluster] = None
    targets = list(config.targets)
    data_dir: Optional[str] = None
    credentials = ClientCredentials.from_cert_dir(config.tls_dir) if config.tls_dir else None
    if not targets:
        if config.data_dir is not None:
            os.makedirs(config.data_dir, exist_ok=True)  # as `raftfast cluster --data-dir` does
        data_dir = tempfile.mkdtemp(prefix="raftfast-bench-", dir=config.data_dir)  # fresh WALs
        tls = CertDir(config.tls_dir).tls_config() if config.tls_dir else None
        cluster = LocalCluster(config.nodes, data_dir=data_dir, base_port=0, serve_args=config.serve_args, tls=tls)
    try:
        if cluster is not None:
            cluster.start()
            targets = cluster.client_addresses
        if config.rate_fraction is None:
            if phase is not None:
                phase("writing" if config.rate is None else f"{config.rate:,.0f} writes/s offered", config.duration)
            return _measure(config, targets, cluster, progress, credentials, config.rate)
        probe_config = replace(config, rate_fraction=None, duration=min(PROBE_DURATION, config.duration))
        if phase is not None:
            phase("finding the maximum", probe_config.duration)
        probe = _measure(probe_config, targets, cluster, progress, credentials, None)
        if not probe.throughput:
            raise RuntimeError("the closed-loop probe completed no writes: no maximum to take a fraction of")
        rate = config.rate_fraction * probe.throughput
        if phase is not None:
            phase(f"{config.rate_fraction:.0%} of it: {rate:,.0f} writes/s offered", config.duration)
        result = _measure(config, targets, cluster, progress, credentials, rate)
        result.probe = probe
        return result
    finally:
        if cluster is not None:
            cluster.stop()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)


def _measure(config: BenchConfig, targets: List[str], cluster: Optional[LocalCluster],
             progress: Optional[Progress], credentials: Optional[ClientCredentials],
             rate: Optional[float]) -> BenchResult:
    procs = max(1, min(config.load_processes, config.clients))
    context = multiprocessing.get_context("spawn")
    workers = []
    for i in range(procs):
        clients = config.clients // procs + (1 if i < config.clients % procs else 0)
        share = rate * clients / config.clients if rate is not None else None  # by the process's clients
        spec = LoadSpec(targets, clients, config.depth, config.value_size, config.keys,
                        config.warmup, config.duration, seed=i, credentials=credentials, rate=share)
        parent, child = context.Pipe(duplex=False)
        process = context.Process(target=load_process_main, args=(spec, child), daemon=True)
        process.start()
        child.close()
        workers.append((process, parent))
    pids = {n.id: n.pid for n in cluster.nodes} if cluster is not None else {}
    cpu_start: Dict[int, float] = {}
    cpu_end: Dict[int, float] = {}
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    reports: List[Optional[LoadReport]] = [None] * procs
    done_counts = [0] * procs
    error_counts = [0] * procs
    failures = []
    pending = set(range(procs))
    while pending:
        for i in list(pending):
            _, conn = workers[i]
            if not conn.poll(0.05):
                continue
            try:
                message = conn.recv()
            except EOFError:
                failures.append(f"load process {i} died")
                pending.discard(i)
                continue
            kind = message[0]
            if kind == "progress":
                if started_at is None:
                    started_at = time.perf_counter()
                    cpu_start = {k: _cpu_seconds(p) for k, p in pids.items() if p}
                _, elapsed, done_counts[i], error_counts[i] = message
                if progress is not None:
                    progress(elapsed, sum(done_counts), sum(error_counts))
            elif kind == "done":
                if ended_at is None:
                    ended_at = time.perf_counter()
                    cpu_end = {k: _cpu_seconds(p) for k, p in pids.items() if p}
                reports[i] = message[1]
                pending.discard(i)
            else:
                failures.append(message[1])
                pending.discard(i)
    for process, conn in workers:
        process.join(5)
        conn.close()
    if failures:
        raise RuntimeError("; ".join(failures))
    done = [r for r in reports if r is not None]
    elapsed = max(r.elapsed for r in done)
    latencies = array("q")
    for r in done:
        latencies.frombytes(r.latencies)
    seconds = max(len(r.per_second) for r in done)
    per_second = [sum(r.per_second[s] for r in done if s < len(r.per_second)) for s in range(seconds)]
    # CPU is sampled from the first progress report to the first final report
    window = (ended_at - started_at) if started_at is not None and ended_at is not None else 0.0
    cpu = {k: 100.0 * (cpu_end[k] - cpu_start[k]) / window for k in cpu_start if k in cpu_end and window > 0}
    return BenchResult(
        config=config,
        writes=sum(r.completed for r in done),
        errors=sum(r.errors for r in done),
        elapsed=elapsed,
        latencies_us=np.frombuffer(latencies, dtype=np.int64) / 1000.0,
        per_second=per_second,
        cpu=cpu,
        load_cpu=100.0 * sum(r.cpu_seconds for r in done) / elapsed if elapsed else 0.0,
        offered_rate=rate,
        scheduled=sum(r.scheduled for r in done),
        held_back=sum(r.held_back for r in done),
        unfinished=sum(r.unfinished for r in done),
        # the worst process's figures: any late process delays its own writes
        pacer_lag_us=[max(values) for values in zip(*(r.pacer_lag_us for r in done))],
    )
