"""`raftfast chaos`: one run, or a soak of `--runs N` with successive seeds and a summary."""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from typing import List

from .nemesis import NEMESES
from .runner import ChaosConfig, ChaosResult, run_chaos, usable_nemeses

__all__ = ["main"]


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    nemeses, skipped = usable_nemeses(args.nemesis)
    if skipped:
        console.print(f"[yellow]raftfast chaos: {skipped}[/yellow]")
    if not nemeses:
        console.print("[red]raftfast chaos: no nemesis left to run[/red]")
        return 1
    results: List[ChaosResult] = []
    for run in range(args.runs):
        seed = args.seed + run
        history = args.history
        if history and args.runs > 1:  # one file per run: FILE-SEED.EXT
            root, ext = os.path.splitext(history)
            history = f"{root}-{seed}{ext or '.jsonl'}"
        config = ChaosConfig(nodes=args.nodes, duration=args.duration, nemeses=nemeses, seed=seed,
                             clients=args.clients, keys=args.keys, history=history, sync=args.sync)
        console.print(f"[bold]chaos run {run + 1}/{args.runs}[/bold]: seed {seed}, {args.nodes} nodes, "
                      f"{args.duration:g} s, {args.sync} fsync, nemeses {', '.join(nemeses) if len(nemeses) < len(NEMESES) else 'all'}")
        result = run_chaos(config, progress=(lambda line: console.print("  " + line)) if args.verbose else lambda line: None)
        results.append(result)
        console.print("  " + _verdict(result))
        for line in result.episodes if not args.verbose else []:
            console.print(f"    {line}")
    table = Table(title=f"raftfast chaos: {len(results)} run(s)")
    for column in ("seed", "net", "faults", "ops", "unknown", "linear", "lost", "diverged", "errors", "s"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in results:
        table.add_row(str(r.seed), "netns" if r.netns else "hook", str(len(r.episodes)), str(r.ops),
                      str(r.unknown), {True: "yes", False: "[red]NO[/red]", None: "[yellow]undecided[/yellow]"}[r.linearizable],
                      str(len(r.lost)), str(len(r.diverged)), str(len(r.errors)), f"{r.seconds:.1f}")
    Console(width=max(Console().width, 110)).print(table)
    played = Counter(line.split()[-1] for r in results for line in r.episodes)  # "start- end s name"
    print("episodes per nemesis: " + ", ".join(f"{name} {played[name]}" for name in nemeses))
    failed = [r for r in results if not r.passed]
    print(f"runs {len(results)}, ops checked {sum(r.ops for r in results)}, "
          f"unknown {sum(r.unknown for r in results)}, "
          f"violations {sum(r.violations for r in results)}, "
          f"lost writes {sum(len(r.lost) for r in results)}, "
          f"divergences {sum(len(r.diverged) for r in results)}, "
          f"undecided {sum(r.linearizable is None for r in results)}, failed runs {len(failed)}")
    for r in failed:
        print(f"FAILED seed {r.seed}: history {r.history}, node logs in {r.data_dir}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.to_dict() for r in results], f, indent=2)
    return 1 if failed else 0


def _verdict(r: ChaosResult) -> str:
    if r.passed:
        return (f"[green]ok[/green]: {r.ops} ops ({r.unknown} unknown) linearizable, no lost writes, "
                f"replicas converged ({r.seconds:.1f} s)")
    lines = [f"[red]FAILED[/red] (seed {r.seed}, history {r.history}, logs {r.data_dir})"]
    if r.linearizable is False:
        lines.append(f"    not linearizable: {r.explanation}")
    elif r.linearizable is None:
        lines.append(f"    linearizability undecided: {r.explanation}")
    lines += [f"    lost write: {p}" for p in r.lost]
    lines += [f"    divergence: {p}" for p in r.diverged]
    lines += [f"    error: {p}" for p in r.errors]
    lines += [f"    {line}" for line in r.log]
    return "\n".join(lines)
