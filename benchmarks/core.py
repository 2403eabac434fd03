"""Core throughput of both builds, measured in one run, with the compiled/pure ratio.

    python -m benchmarks.core [--json FILE] [--quick] [--rounds N]

(a) single node: propose -> commit -> apply through `step_many`, batches of 256 x 64-byte
    commands, entries/s;
(b) three nodes stepped in one process with in-memory message passing, the same batches,
    committed entries/s (counted as Apply actions on the leader);
(c) encode + decode of an AppendEntries carrying 256 x 64-byte entries, MB/s of encoded bytes.

Each build runs in its own child process (`RAFTFAST_NO_EXTENSIONS=1` selects the pure one), so
one invocation compares both on the same machine at the same moment. `--rounds N` alternates
the two children N times and keeps each figure's best, so a burst of load from elsewhere on a
shared machine cannot land on one build only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List


def _best_rate(run: Callable[[], int], seconds: float, repeats: int = 5) -> float:
    """Best units/s over `repeats` timed slices of about `seconds` each (noise only slows)."""
    run()  # warm up
    best = 0.0
    for _ in range(repeats):
        units = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            units += run()
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, units / (now - start))
    return best


def single_node(seconds: float) -> float:
    from raftfast import RaftNode

    from .workloads import BATCH, proposals, single_leader

    node = single_leader(RaftNode)
    events = proposals()

    def run() -> int:
        node.step_many(events)
        return BATCH

    return _best_rate(run, seconds)


def three_nodes(seconds: float) -> float:
    from raftfast import RaftNode

    from .workloads import InProcessCluster

    return _best_rate(InProcessCluster(RaftNode).round, seconds)


def codec(seconds: float) -> float:
    from raftfast import AppendEntries, LogEntry
    from raftfast.framing import decode, encode

    from .workloads import BATCH, VALUE

    entries = [LogEntry(7, 1001 + i, command=VALUE) for i in range(BATCH)]
    message = AppendEntries(7, 1, 1000, 7, entries, 990)
    # the leader sends what its log hands it: decode once to get the compact batch form
    message = decode(encode(message))
    size = len(encode(message))

    def run() -> int:
        decode(encode(message))
        return size

    return _best_rate(run, seconds) / 1e6


def measure(seconds: float) -> Dict[str, object]:
    import raftfast

    return {
        "implementation": raftfast.IMPLEMENTATION,
        "single_node_entries_per_s": single_node(seconds),
        "three_nodes_entries_per_s": three_nodes(seconds),
        "codec_mb_per_s": codec(seconds),
    }


ROWS = (
    ("(a) single node propose->apply", "single_node_entries_per_s", "entries/s", 5_000_000),
    ("(b) 3 nodes in-process, committed", "three_nodes_entries_per_s", "entries/s", 1_000_000),
    ("(c) AppendEntries encode+decode", "codec_mb_per_s", "MB/s", 500),
)


def _child(pure: bool, seconds: float) -> Dict[str, object]:
    env = dict(os.environ)
    env.pop("RAFTFAST_NO_EXTENSIONS", None)
    if pure:
        env["RAFTFAST_NO_EXTENSIONS"] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.core", "--child", "--seconds", str(seconds)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.core", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="short slices (a smoke run)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the two builds this many times, keeping each figure's best (1)")
    parser.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (0.05 if args.quick else 0.4)
    if seconds <= 0:
        parser.error("--seconds must be positive")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.child:
        print(json.dumps(measure(seconds)))
        return 0

    compiled: Dict[str, object] = {}
    pure: Dict[str, object] = {}
    for _ in range(args.rounds):  # alternate the builds; keep each figure's best
        for best, is_pure in ((compiled, False), (pure, True)):
            for key, value in _child(is_pure, seconds).items():
                best[key] = value if key == "implementation" else max(value, best.get(key, 0.0))
    from rich.console import Console
    from rich.table import Table

    if compiled["implementation"] != "cython":
        Console(stderr=True).print("[yellow]the compiled kernels are not built: both columns are pure Python[/]")
    rounds = f" x {args.rounds} alternating rounds" if args.rounds > 1 else ""
    table = Table(title=f"raftfast core benchmarks (best of 5 slices{rounds} per build)")
    for column in ("benchmark", "unit", "compiled", "pure", "compiled/pure", "target (compiled)"):
        table.add_column(column, justify="right")
    results = {"compiled": compiled, "pure": pure, "ratios": {}, "rounds": args.rounds, "slice_seconds": seconds}
    for label, key, unit, target in ROWS:
        ratio = compiled[key] / pure[key]
        results["ratios"][key] = ratio
        met = "[green]met[/]" if compiled[key] >= target else "[red]missed[/]"
        table.add_row(label, unit, f"{compiled[key]:,.0f}", f"{pure[key]:,.0f}", f"{ratio:.1f}x", f"{target:,} {met}")
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
