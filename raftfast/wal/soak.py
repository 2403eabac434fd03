"""Crash soak: a child process appends and syncs in a loop while this process SIGKILLs it at
random moments, then checks that everything the child reported as synced survived.

    python -m raftfast.wal.soak --kills 200 [--dir DIR] [--seed N]

The child writes each entry's index into its command, so every entry can be checked, and it
reports an index (and its term) only after the `sync()` that made it durable. It also rotates
segments, truncates unsynced entries, changes its hard state and installs snapshots, so kills
land in every kind of write. Exit status 0 means every kill recovered with nothing lost.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..types import HardState, Membership, Snapshot
from .wal import WalLog

SEGMENT_BYTES = 1 << 20
KEEP_ENTRIES = 20_000
"""The child compacts the log to about this many entries, so checking stays cheap."""


def command(index: int) -> bytes:
    """The 64-byte command the child writes at `index`."""
    return index.to_bytes(8, "little") * 8


def snapshot_data(index: int) -> bytes:
    return b"through %d" % index


def child(directory: str, seed: int) -> None:
    """Append, sync and report forever; the parent kills it."""
    rng = random.Random(seed)
    log = WalLog.open(directory, segment_bytes=SEGMENT_BYTES)
    hs = log.hard_state()
    term = max(hs.term, log.last_term(), 1)
    out = sys.stdout.fileno()
    while True:
        first = log.last_index() + 1
        if rng.random() < 0.05:
            # Entries that are never synced, then truncated away: kills land between.
            log.append_commands(term, 0, [b"doomed"] * rng.randint(1, 50))
            log.truncate(first)
        if rng.random() < 0.02:
            term += 1
            hs = HardState(term, rng.choice((None, 1, 2, 3)))
            log.set_hard_state(hs)
        n = rng.randint(1, 300)
        log.append_commands(term, 0, [command(i) for i in range(first, first + n)])
        log.sync()
        os.write(out, b"%d %d\n" % (first + n - 1, hs.term))
        if log.last_index() - log.snapshot_index() > 2 * KEEP_ENTRIES:
            index = log.last_index() - KEEP_ENTRIES
            log.apply_snapshot(Snapshot(index, log.term_at(index), Membership.of([1, 2, 3]), snapshot_data(index)))


@dataclass
class Result:
    kills: int
    last_index: int
    checked_entries: int
    losses: List[str]


def verify(directory: str, reported: int, reported_term: int) -> Tuple[int, int, List[str]]:
    """Open the log as a restarted node would and check everything reported is there:
    (last index, entries checked, problems)."""
    problems = []
    with WalLog.open(directory, segment_bytes=SEGMENT_BYTES) as log:
        snap = log.snapshot()
        last = log.last_index()
        if last < reported:
            problems.append(f"reported index {reported} synced, but the log ends at {last}")
        if snap.index and snap.data != snapshot_data(snap.index):
            problems.append(f"snapshot {snap.index} holds {snap.data!r}")
        if log.hard_state().term < reported_term:
            problems.append(f"hard state term {log.hard_state().term} is below the reported {reported_term}")
        lo = snap.index + 1
        terms, _, commands = log.slices(lo, last)
        for index, cmd in enumerate(commands, lo):
            if cmd != command(index):
                problems.append(f"entry {index} holds {cmd[:16]!r}...")
                break
        if any(a > b for a, b in zip(terms, terms[1:])):
            problems.append("terms go down")
    return last, len(commands), problems


def run(kills: int, directory: str, seed: int = 0, progress: Optional[Callable[[int, int, int], None]] = None) -> Result:
    rng = random.Random(seed)
    reported = reported_term = 0
    checked = 0
    last = 0
    losses: List[str] = []
    for kill in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftfast.wal.soak", "--child", directory, "--seed", str(rng.randrange(1 << 32))],
            stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )
        lines: List[bytes] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        # Kill once the child is under way (it reports after every sync), at a random moment.
        started = time.monotonic()
        while not lines and proc.poll() is None and time.monotonic() - started < 30:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        if proc.returncode != -signal.SIGKILL:
            losses.append(f"kill {kill}: the child exited by itself with status {proc.returncode}")
            break
        for line in lines:
            index, term = map(int, line.split())
            reported, reported_term = max(reported, index), max(reported_term, term)
        last, count, problems = verify(directory, reported, reported_term)
        checked += count
        losses += [f"kill {kill}: {p}" for p in problems]
        if progress is not None:
            progress(kill + 1, reported, last)
    return Result(kills, last, checked, losses)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftfast.wal.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="how many times to SIGKILL the writer (default 200)")
    parser.add_argument("--dir", help="WAL directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.seed)
        return 0
    directory = args.dir or tempfile.mkdtemp(prefix="raftfast-wal-soak-")
    started = time.monotonic()

    def progress(done: int, reported: int, last: int) -> None:
        if done % 20 == 0 or done == args.kills:
            print(f"kill {done}/{args.kills}: last reported synced index {reported}, recovered up to {last}", flush=True)

    try:
        result = run(args.kills, directory, args.seed, progress)
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(
        f"{result.kills} kills in {elapsed:.0f} s: {result.checked_entries} entries checked after recoveries, "
        f"final last index {result.last_index}, losses: {len(result.losses)}"
    )
    for loss in result.losses:
        print("LOSS:", loss)
    return 1 if result.losses else 0


if __name__ == "__main__":
    sys.exit(main())
