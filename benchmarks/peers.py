"""raftfast against PySyncObj, back to back on this machine: committed writes/s and the ratio.

    python -m benchmarks.peers [--duration 10] [--warmup 2] [--value-size 64] [--json FILE]
                               [--raftfast-clients N] [--raftfast-depth N]

1. PySyncObj: 3 nodes on loopback, each its own process, replicating a `ReplDict`
   (pysyncobj.batteries) with asynchronous calls (`set(key, value, callback=...)`). Its best
   settings, found by a sweep on this machine (docs/performance.md) and stated here: the
   in-memory journal (`journalFile=None`, its default; PySyncObj has no fsync setting at all:
   even its FileJournal is an mmap that is not fsynced per write), batched AppendEntries
   (`appendEntriesUseBatch=True`) sent every `--pysyncobj-period` (0.05 s; the default 0.1 s
   caps a window of writes at 10 rounds a second), its own tick thread (`autoTick=True`),
   election timeouts of 1-3 s (no leader change when a node is starved of CPU for a moment),
   and the load generated at the leader (`--pysyncobj-load leader`; followers would forward
   each command to it) with `--pysyncobj-window` (10,000) writes in flight. A write counts when
   its callback reports success; its latency is submit to callback.
2. raftfast, fsync on: `raftfast.kv.bench.run_bench` (3 `raftfast serve` processes, WalLog in a
   temporary directory on disk, one fdatasync per turn; 64 pipelined clients x 128 in flight,
   `raftfast bench`'s default, from one load process; `--raftfast-clients`/`--raftfast-depth`
   change it), the same value size and duration.
3. raftfast, fsync off: the same with the WALs on /dev/shm (tmpfs: fdatasync returns at
   once), the setting comparable to PySyncObj's; skipped where /dev/shm does not exist.

Everything runs on 127.0.0.1, one system at a time, and every loop is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from typing import Dict, List, Optional

import numpy as np

NODES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


# -- PySyncObj: one node (a child process) ------------------------------------------------


def _pysyncobj_node(args: argparse.Namespace) -> int:
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    addresses = args.pysyncobj_addresses.split(",")
    me = addresses[args.pysyncobj_node]
    partners = [a for a in addresses if a != me]
    conf = SyncObjConf(
        autoTick=True,  # PySyncObj's own tick thread (ticking by hand in the load loop was slower)
        journalFile=None,  # in memory (PySyncObj's default and fastest; it never fsyncs)
        appendEntriesUseBatch=True,
        appendEntriesPeriod=args.pysyncobj_period,
        # longer election timeouts than the default 0.4-1.4 s: a node starved of CPU for a
        # moment on this shared 2-core machine must not cost a leader change mid-run
        raftMinTimeout=1.0,
        raftMaxTimeout=3.0,
        dynamicMembershipChange=False,
        logCompactionMinEntries=1 << 30,  # no log compaction inside the measured window
        logCompactionMinTime=1 << 30,
    )
    store = ReplDict()
    node = SyncObj(me, partners, conf=conf, consumers=[store])
    start_at, warmup, duration = args.start_at, args.warmup, args.duration
    measure_from = start_at + warmup
    measure_to = measure_from + duration
    stop_at = measure_to + 1.0  # keep serving while slower peers finish their window
    value = os.urandom(args.value_size)
    keys = [f"key-{args.pysyncobj_node}-{i}" for i in range(10_000)]
    latencies = array("q")
    counts = {"ok": 0, "errors": 0}
    measuring = [False]
    slots = threading.Semaphore(args.pysyncobj_window)  # writes in flight
    clock = time.perf_counter_ns
    wall = time.time

    def callback_for(sent: int):
        def done(result, error) -> None:
            now = clock()
            if measuring[0]:
                if error == FAIL_REASON.SUCCESS:
                    counts["ok"] += 1
                    latencies.append(now - sent)
                else:
                    counts["errors"] += 1
            slots.release()

        return done

    # wait for a leader and the common start time (both bounded)
    while wall() < start_at or node._getLeader() is None:
        time.sleep(0.01)
        if wall() > start_at + 20:
            print(json.dumps({"error": f"node {me}: no leader 20 s after the start time"}))
            return 1
    loads = args.pysyncobj_load == "all" or str(node._getLeader()) == me
    k = 0
    started = ended = 0.0
    while True:
        now = wall()
        if now >= stop_at:
            break
        if not measuring[0] and measure_from <= now < measure_to:
            measuring[0] = True
            started = time.perf_counter()
        elif measuring[0] and now >= measure_to:
            measuring[0] = False
            ended = time.perf_counter()
        if loads and now < measure_to:
            submitted = 0
            while submitted < 1000 and slots.acquire(timeout=0.001):
                store.set(keys[k], value, callback=callback_for(clock()))
                k = k + 1 if k + 1 < len(keys) else 0
                submitted += 1
        if not loads:
            time.sleep(0.01)
    ended = ended or time.perf_counter()
    path = os.path.join(args.pysyncobj_out, f"node-{args.pysyncobj_node}.npy")
    np.save(path, np.frombuffer(latencies, dtype=np.int64))
    print(json.dumps({"ok": counts["ok"], "errors": counts["errors"], "elapsed": ended - started,
                      "latencies": path}), flush=True)
    node.destroy()
    return 0


# -- PySyncObj: the cluster ------------------------------------------------------------------


def run_pysyncobj(duration: float, warmup: float, value_size: int, window: int = 10_000,
                  period: float = 0.05, load: str = "leader") -> Dict[str, object]:
    from raftfast.runtime.cluster import free_ports

    ports = free_ports(NODES)
    addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
    out = tempfile.mkdtemp(prefix="pysyncobj-bench-")
    start_at = time.time() + 3.0  # processes up, connected and a leader elected by then
    procs = []
    try:
        for i in range(NODES):
            cmd = [sys.executable, "-m", "benchmarks.peers", "--pysyncobj-node", str(i),
                   "--pysyncobj-addresses", addresses, "--pysyncobj-out", out,
                   "--start-at", repr(start_at), "--warmup", str(warmup), "--duration", str(duration),
                   "--value-size", str(value_size), "--pysyncobj-window", str(window),
                   "--pysyncobj-period", repr(period), "--pysyncobj-load", load]
            # PySyncObj logs warnings to stderr: kept in a file, shown if the node fails
            stderr = open(os.path.join(out, f"node-{i}.log"), "w")
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=_ROOT,
                                          env=_child_env()))
            stderr.close()
        limit = 3.0 + warmup + duration + 40.0
        reports = []
        for proc in procs:
            try:
                stdout, _ = proc.communicate(timeout=max(1.0, start_at + limit - time.time()))
            except subprocess.TimeoutExpired:
                raise RuntimeError("a PySyncObj node did not finish in time") from None
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines or "error" in json.loads(lines[-1]):
                with open(os.path.join(out, f"node-{len(reports)}.log")) as f:
                    log = f.read()[-1500:]
                raise RuntimeError(f"PySyncObj node {len(reports)} failed (exit {proc.returncode}): "
                                   f"{stdout[-500:]}\n{log}")
            reports.append(json.loads(lines[-1]))
        latencies = np.concatenate([np.load(r["latencies"]) for r in reports]) / 1000.0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(out, ignore_errors=True)
    writes = sum(r["ok"] for r in reports)
    throughput = sum(r["ok"] / r["elapsed"] for r in reports if r["elapsed"] > 0)
    settings = {"journalFile": None, "appendEntriesUseBatch": True, "appendEntriesPeriod": period,
                "autoTick": True, "raftMinTimeout": 1.0, "raftMaxTimeout": 3.0, "load": load, "window": window}
    return _summary(throughput, writes, sum(r["errors"] for r in reports), latencies, settings)


# -- raftfast ------------------------------------------------------------------------------------


def run_raftfast(duration: float, warmup: float, value_size: int, data_dir: Optional[str],
                 clients: Optional[int] = None, depth: Optional[int] = None) -> Dict[str, object]:
    from raftfast.kv.bench import BenchConfig, run_bench

    config = BenchConfig(duration=duration, warmup=warmup, value_size=value_size, data_dir=data_dir)
    config.clients = clients or config.clients
    config.depth = depth or config.depth
    try:
        result = run_bench(config)
    except (RuntimeError, TimeoutError) as exc:
        # a node that fails to start (a free port taken by another process in the meantime, on a
        # shared machine) costs one more try, said out loud; a second failure is reported
        print(f"raftfast run failed ({exc}); trying once more", file=sys.stderr)
        result = run_bench(config)
    settings = {"data_dir": data_dir or tempfile.gettempdir(), "clients": config.clients, "depth": config.depth}
    summary = _summary(result.throughput, result.writes, result.errors, result.latencies_us, settings)
    summary["cpu_percent"] = {str(k): v for k, v in result.cpu.items()}
    return summary


# -- shared --------------------------------------------------------------------------------------

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (_ROOT, env.get("PYTHONPATH"))))
    return env


def _summary(throughput: float, writes: int, errors: int, latencies_us: np.ndarray,
             settings: Dict[str, object]) -> Dict[str, object]:
    values = np.percentile(latencies_us, PERCENTILES) if len(latencies_us) else [float("nan")] * len(PERCENTILES)
    return {
        "writes_per_s": throughput,
        "writes": writes,
        "errors": errors,
        "latency_ms": {f"p{p:g}": float(v) / 1000.0 for p, v in zip(PERCENTILES, values)},
        "settings": settings,
    }


def _fsync_floor_us(directory: str) -> float:
    from .wal_bench import fdatasync_floor

    path = tempfile.mkdtemp(prefix="fsync-", dir=directory)
    try:
        return fdatasync_floor(path, rounds=100)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per system (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (2)")
    parser.add_argument("--value-size", type=int, default=64, help="bytes per value (64)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--pysyncobj-window", type=int, default=10_000,
                        help="PySyncObj writes in flight per loading node (10000)")
    parser.add_argument("--pysyncobj-period", type=float, default=0.05,
                        help="PySyncObj appendEntriesPeriod, seconds (0.05)")
    parser.add_argument("--pysyncobj-load", choices=["leader", "all"], default="leader",
                        help="PySyncObj nodes that generate writes (leader)")
    parser.add_argument("--raftfast-clients", type=int, default=None,
                        help="raftfast bench clients (default: raftfast bench's)")
    parser.add_argument("--raftfast-depth", type=int, default=None,
                        help="raftfast writes in flight per client (default: raftfast bench's)")
    parser.add_argument("--no-shm", action="store_true", help="skip raftfast with the WALs on /dev/shm")
    # the PySyncObj node processes
    parser.add_argument("--pysyncobj-node", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pysyncobj-addresses", help=argparse.SUPPRESS)
    parser.add_argument("--pysyncobj-out", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if args.pysyncobj_node is not None:
        return _pysyncobj_node(args)
    if args.duration <= 0 or args.warmup < 0 or args.value_size < 0 or args.pysyncobj_window < 1 \
            or not 0 < args.pysyncobj_period < 0.4 / 3:
        parser.error("--duration must be positive; --warmup and --value-size >= 0; --pysyncobj-window >= 1; "
                     "0 < --pysyncobj-period < 0.133 (a third of PySyncObj's minimum election timeout)")
    for flag in ("raftfast_clients", "raftfast_depth"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")

    import pysyncobj
    import raftfast
    from rich.console import Console
    from rich.table import Table

    err = Console(stderr=True)
    shm = not args.no_shm and os.path.isdir("/dev/shm")
    machine = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "raftfast_implementation": raftfast.IMPLEMENTATION,
        "pysyncobj": getattr(pysyncobj, "__version__", None) or _version("pysyncobj"),
        "fdatasync_us_disk": _fsync_floor_us(tempfile.gettempdir()),
        "loadavg_before": os.getloadavg()[0],
    }
    results: Dict[str, object] = {"machine": machine, "duration_s": args.duration,
                                  "value_size": args.value_size}
    err.print(f"PySyncObj {machine['pysyncobj']}: {NODES} nodes, {args.duration:g} s ...")
    results["pysyncobj"] = run_pysyncobj(args.duration, args.warmup, args.value_size, args.pysyncobj_window,
                                         args.pysyncobj_period, args.pysyncobj_load)
    err.print(f"raftfast ({raftfast.IMPLEMENTATION}), WAL fsync on, {args.duration:g} s ...")
    window = {"clients": args.raftfast_clients, "depth": args.raftfast_depth}
    results["raftfast_fsync"] = run_raftfast(args.duration, args.warmup, args.value_size, None, **window)
    if shm:
        err.print(f"raftfast ({raftfast.IMPLEMENTATION}), WAL on /dev/shm (no fsync cost), {args.duration:g} s ...")
        results["raftfast_no_fsync"] = run_raftfast(args.duration, args.warmup, args.value_size, "/dev/shm", **window)
    base = results["pysyncobj"]["writes_per_s"]  # type: ignore[index]
    results["ratios"] = {key: results[key]["writes_per_s"] / base if base else None  # type: ignore[index]
                         for key in ("raftfast_fsync", "raftfast_no_fsync") if key in results}

    table = Table(title=f"3 nodes on loopback, {args.value_size}-byte values, {args.duration:g} s each "
                        f"(fdatasync on this disk: {machine['fdatasync_us_disk'] / 1000:.1f} ms)")
    for column in ("system", "durability", "committed writes/s", "p50", "p99", "errors", "vs PySyncObj"):
        table.add_column(column, justify="left" if column in ("system", "durability") else "right")
    rows = [("PySyncObj " + str(machine["pysyncobj"]), "memory journal (no fsync)", "pysyncobj"),
            (f"raftfast ({raftfast.IMPLEMENTATION})", "WAL, fdatasync per turn", "raftfast_fsync")]
    if shm:
        rows.append((f"raftfast ({raftfast.IMPLEMENTATION})", "WAL on /dev/shm (fsync off)", "raftfast_no_fsync"))
    for name, durability, key in rows:
        r = results[key]
        ratio = results["ratios"].get(key) if key != "pysyncobj" else 1.0  # type: ignore[union-attr]
        table.add_row(name, durability, f"{r['writes_per_s']:,.0f}", f"{r['latency_ms']['p50']:.2f} ms",
                      f"{r['latency_ms']['p99']:.2f} ms", str(r["errors"]),
                      f"{ratio:.1f}x" if ratio is not None else "-")
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def _version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
