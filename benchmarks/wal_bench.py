"""WAL benchmarks: group-commit throughput, recovery time, and bytes written per entry.

    python -m benchmarks.wal_bench [--entries 2000000] [--recover 1000000] [--dir DIR] [--cold]

1. append + sync of batches of 256 x 64-byte entries, sustained over `--entries` entries (so
   segment rotations, with their zero-filling, are included), through both ways in:
   `append(list of LogEntry)` (the batch is built before the clock starts) and
   `append_commands(term, kind, commands)` (the node's proposal path); with the CPU time each
   append+sync costs, which unlike the rate does not depend on how busy the disk is;
2. the bytes that reach the WAL per entry: in records, in write() calls (records plus the
   zeros that preallocate segments), and at the block device (/sys/dev/block/*/stat, whole
   device, so other writers on the machine count too; /proc/self/io's write_bytes counts a
   dirtied page-cache folio whole, 1 MiB for a small write into a large folio, which is
   not what reaches the disk);
3. recovery (`WalLog.open`) of a `--recover`-entry log, warm page cache, with equal-length
   and with varied-length commands; `--cold` also drops the page cache first (root only, and
   it affects the whole machine).

It also times a raw 17 KB overwrite + fdatasync, the floor under every group commit, because
these machines are shared and absolute figures drift from run to run: compare within a run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from typing import Dict, List

from raftfast.types import EntryKind, LogEntry
from raftfast.wal import WalLog

BATCH = 256
SIZE = 64


def io_counters(directory: str) -> Dict[str, int]:
    """This process's write() bytes, and the bytes written to the device holding `directory`."""
    with open("/proc/self/io") as f:
        counters = {key: int(value) for key, value in (line.split(": ") for line in f)}
    dev = os.stat(directory).st_dev
    stat = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat"
    try:
        with open(stat) as f:
            counters["device_bytes"] = int(f.read().split()[6]) * 512  # field 7: sectors written
    except OSError:  # no block device (tmpfs, overlay): not measured
        counters["device_bytes"] = -1
    return counters


def fdatasync_floor(directory: str, rounds: int = 300) -> float:
    """Median µs of overwriting 17 KB of a preallocated file and fdatasync'ing it."""
    path = os.path.join(directory, "floor")
    block = os.urandom(BATCH * (SIZE + 4))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, bytes(len(block) * rounds))
        os.fsync(fd)
        times = []
        for i in range(rounds):
            start = time.perf_counter()
            os.pwrite(fd, block, i * len(block))
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times) * 1e6


def throughput(directory: str, entries: int, via: str) -> Dict[str, float]:
    batches = entries // BATCH
    commands = [os.urandom(SIZE) for _ in range(BATCH)]
    os.makedirs(directory, exist_ok=True)
    before = io_counters(directory)
    cpu = 0.0
    with WalLog.open(directory) as log:
        latencies: List[float] = []
        busy = 0.0
        for b in range(batches):
            if via == "append":
                first = b * BATCH + 1
                batch = [LogEntry(1, first + i, EntryKind.NORMAL, c) for i, c in enumerate(commands)]
            started_cpu = time.process_time()
            start = time.perf_counter()
            if via == "append":
                log.append(batch)
            else:
                log.append_commands(1, 0, commands)
            log.sync()
            spent = time.perf_counter() - start
            cpu += time.process_time() - started_cpu
            latencies.append(spent)
            busy += spent
    after = io_counters(directory)
    latencies.sort()
    done = batches * BATCH
    return {
        "entries_per_s": done / busy,
        "cpu_us": cpu / batches * 1e6,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "max_ms": latencies[-1] * 1e3,
        "wchar_per_entry": (after["wchar"] - before["wchar"]) / done,
        "device_per_entry": (
            (after["device_bytes"] - before["device_bytes"]) / done if before["device_bytes"] >= 0 else float("nan")
        ),
        "record_per_entry": record_bytes(directory) / done,
    }


def record_bytes(directory: str) -> int:
    """Bytes of records in the segments (everything before each segment's zero tail)."""
    from raftfast.wal.segment import Scan

    total = 0
    for name in os.listdir(directory):
        if name.endswith(".wal"):
            with open(os.path.join(directory, name), "rb") as f:
                scan = Scan(f.read())
            for _ in scan:
                pass
            total += scan.end
    return total


def build(directory: str, entries: int, varied: bool) -> None:
    rng = random.Random(1)
    with WalLog.open(directory) as log:
        for _ in range(entries // BATCH):
            sizes = [rng.randint(SIZE // 2, SIZE * 3 // 2) for _ in range(BATCH)] if varied else [SIZE] * BATCH
            log.append_commands(1, 0, [rng.randbytes(n) for n in sizes])
        log.sync()


def recovery(directory: str, entries: int, varied: bool, cold: bool) -> Dict[str, float]:
    build(directory, entries, varied)
    times = []
    for _ in range(3):
        if cold:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1\n")
        start = time.perf_counter()
        log = WalLog.open(directory)
        times.append(time.perf_counter() - start)
        assert log.last_index() == entries // BATCH * BATCH
        log.close()
    return {"median_s": statistics.median(times), "best_s": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=2_000_000, help="entries appended in the throughput runs")
    parser.add_argument("--recover", type=int, default=1_000_000, help="entries in the log to recover")
    parser.add_argument("--dir", help="where to put the logs (default: a temp dir under the current directory)")
    parser.add_argument("--cold", action="store_true", help="also time recovery with a dropped page cache")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir or ".")
    try:
        print(f"raw 17 KB overwrite + fdatasync: median {fdatasync_floor(base):.0f} µs")
        for via in ("append", "append_commands"):
            path = os.path.join(base, via)
            r = throughput(path, args.entries, via)
            shutil.rmtree(path)
            print(
                f"{via:>15}+sync, {BATCH} x {SIZE} B per batch: {r['entries_per_s']:,.0f} entries/s "
                f"(batch p50 {r['p50_us']:.0f} µs, p99 {r['p99_us']:.0f} µs, max {r['max_ms']:.1f} ms)"
            )
            print(
                f"{'':>15} CPU per append+sync: {r['cpu_us']:.0f} µs (user+system, all threads, so the "
                f"spare's zero-fill too); serial with a 140 µs fsync: {BATCH / (r['cpu_us'] + 140) * 1e6:,.0f} entries/s"
            )
            print(
                f"{'':>15} bytes per {SIZE} B entry: {r['record_per_entry']:.1f} in records; through write(), "
                f"{r['wchar_per_entry']:.1f} with the zero-fill of every segment made (the spare included; "
                f"{2 * r['record_per_entry']:.1f} in steady state); {r['device_per_entry']:.1f} at the device"
            )
        for varied in (False, True):
            label = f"{SIZE // 2}-{SIZE * 3 // 2} B commands" if varied else f"{SIZE} B commands"
            runs = [("warm", False)] + ([("cold", True)] if args.cold else [])
            for cache, cold in runs:
                path = os.path.join(base, f"recover-{varied}-{cache}")
                r = recovery(path, args.recover, varied, cold)
                shutil.rmtree(path)
                print(f"recovery of {args.recover:,} entries ({label}, {cache} cache): median {r['median_s']:.2f} s, best {r['best_s']:.2f} s")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
