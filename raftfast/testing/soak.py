"""Run the random simulation over many seeds: `python -m raftfast.testing.soak --seeds 20000`.

Each seed is one `run_random(seed, steps, nodes)`; without `--nodes`, even seeds run 3 nodes and
odd seeds 5. The first violation (an InvariantViolation, a LivenessFailure, or any exception
from the node) stops the soak with exit status 1 and prints the seed and the command that
replays it exactly.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import traceback
from typing import Iterator, Optional, Tuple

from .invariants import InvariantViolation
from .simulator import LivenessFailure, run_random

# (seed, nodes, failure text or None, commands committed, ticks run)
Outcome = Tuple[int, int, Optional[str], int, int]


def nodes_for(seed: int, nodes: Optional[int]) -> int:
    return nodes if nodes is not None else (3 if seed % 2 == 0 else 5)


def run_seed(job: Tuple[int, int, int]) -> Outcome:
    seed, nodes, steps = job
    try:
        result = run_random(seed, steps, nodes)
    except (InvariantViolation, LivenessFailure) as failure:
        return seed, nodes, f"{type(failure).__name__}: {failure}", 0, 0
    except Exception:  # the node (or the simulator) crashed: a failure of its own kind
        return seed, nodes, traceback.format_exc(), 0, 0
    return seed, nodes, None, result.committed, result.ticks


def replay_command(seed: int, nodes: int, steps: int) -> str:
    return (
        f"python -m raftfast.testing.soak --seeds 1 --start {seed} --nodes {nodes} --steps {steps}"
    )


def _outcomes(jobs: int, work: list) -> Iterator[Outcome]:
    if jobs == 1:
        yield from map(run_seed, work)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        # In seed order, so "the first violation" is the lowest failing seed seen so far.
        yield from pool.imap(run_seed, work, chunksize=8)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftfast.testing.soak", description=__doc__)
    parser.add_argument("--seeds", type=int, default=20000, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--nodes", type=int, choices=(3, 5), help="cluster size (default: mix)")
    parser.add_argument("--steps", type=int, default=300, help="ticks of chaos per seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or args.steps < 0:
        parser.error("--seeds and --jobs must be positive, --steps non-negative")
    work = [
        (seed, nodes_for(seed, args.nodes), args.steps)
        for seed in range(args.start, args.start + args.seeds)
    ]
    every = max(1, args.seeds // 20)
    started = time.monotonic()
    committed = ticks = 0
    for done, (seed, nodes, failure, n_committed, n_ticks) in enumerate(
        _outcomes(args.jobs, work), 1
    ):
        if failure is not None:
            print(f"\nFAILED: seed {seed} ({nodes} nodes) after {done - 1} passing seeds")
            print(failure.rstrip())
            print(f"replay: {replay_command(seed, nodes, args.steps)}")
            return 1
        committed += n_committed
        ticks += n_ticks
        if done % every == 0 or done == args.seeds:
            elapsed = time.monotonic() - started
            print(
                f"  {done}/{args.seeds} seeds ok, {done / elapsed:.1f} seeds/s, {elapsed:.0f}s",
                flush=True,
            )
    elapsed = time.monotonic() - started
    print(
        f"OK: {args.seeds} seeds (from {args.start}, steps {args.steps}), zero violations; "
        f"{committed} commands committed over {ticks} ticks in {elapsed:.1f}s "
        f"with {args.jobs} job(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
