"""One chaos run, and a soak of many: cluster + workload + nemesis, then the verdicts.

A run: start a cluster of `raftfast serve` processes (in network namespaces when the schedule
has `netns-partition` episodes), let the clients write for `duration` seconds while the nemesis
plays its schedule, heal everything, wait until every member has applied the same index, read
every key once more, and judge:
  1. the history is linearizable (`raftfast.testing.linearizability.check`);
  2. no acknowledged write was lost (`checks.lost_writes`, from the final reads);
  3. the members converged: the same applied index and the same state digest (`checks.divergence`).
A run that cannot reach convergence or the final reads after healing is a failure too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..testing.history import HistoryWriter, load_history
from ..testing.linearizability import check
from . import netns
from .checks import divergence, lost_writes
from .cluster import ChaosCluster
from .nemesis import NEMESES, Episode, Nemesis, schedule
from .workload import Workload, WorkloadConfig

__all__ = ["ChaosConfig", "ChaosResult", "run_chaos", "usable_nemeses"]

SERVE_ARGS = ["--snapshot-threshold", "500", "--log-level", "info"]  # snapshots happen in every run


@dataclass(frozen=True)
class ChaosConfig:
    nodes: int = 3
    duration: float = 10.0
    nemeses: Sequence[str] = tuple(NEMESES)
    seed: int = 1
    clients: int = 5
    keys: int = 8
    history: Optional[str] = None  # where to write the history (default: in the run's directory)
    check_timeout: float = 300.0  # seconds for the linearizability search
    converge_timeout: float = 30.0  # seconds after healing for every member to catch up
    sync: str = "inline"  # the nodes' `serve --sync`: pipelined runs the leader's fsync beside replication


@dataclass
class ChaosResult:
    seed: int
    episodes: List[str]  # the episodes carried out
    history: str  # the history file
    data_dir: Optional[str]  # kept (node logs, WALs) when the run failed
    ops: int = 0
    unknown: int = 0
    linearizable: Optional[bool] = None  # None: the checker ran out of time
    explanation: str = ""
    lost: List[str] = field(default_factory=list)
    diverged: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)  # no convergence, no final reads, a crash
    netns: bool = False
    seconds: float = 0.0
    log: List[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (self.linearizable is False) + len(self.lost) + len(self.diverged) + len(self.errors)

    @property
    def passed(self) -> bool:
        return self.violations == 0 and self.linearizable is True

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), violations=self.violations, passed=self.passed)


def usable_nemeses(names: Sequence[str]) -> tuple:
    """(the names this machine can run, why the others cannot: '' when all can)."""
    if "netns-partition" not in names:
        return list(names), ""
    ok, why = netns.available()
    if ok:
        return list(names), ""
    return [n for n in names if n != "netns-partition"], f"skipping netns-partition: {why}"


def run_chaos(config: ChaosConfig, progress: Callable[[str], None] = lambda line: None) -> ChaosResult:
    return asyncio.run(_run(config, progress))


async def _run(config: ChaosConfig, progress: Callable[[str], None]) -> ChaosResult:
    started = time.monotonic()
    data_dir = tempfile.mkdtemp(prefix=f"raftfast-chaos-{config.seed}-")
    history_path = config.history or os.path.join(data_dir, "history.jsonl")
    if os.path.exists(history_path):
        os.remove(history_path)
    episodes = schedule(config.nemeses, config.duration, config.seed)
    use_netns = any(e.nemesis == "netns-partition" for e in episodes)
    result = ChaosResult(config.seed, [], history_path, data_dir, netns=use_netns)

    def log(line: str) -> None:
        result.log.append(line)
        progress(line)

    cluster = ChaosCluster(config.nodes, data_dir, netns=use_netns, serve_args=[*SERVE_ARGS, "--sync", config.sync])
    writer = HistoryWriter(history_path)
    try:
        await cluster.start()
        await _drive(cluster, writer, config, episodes, result, log)
    except (RuntimeError, TimeoutError, OSError) as exc:
        result.errors.append(f"the run broke down: {type(exc).__name__}: {exc}")
    finally:
        writer.close()
        cluster.stop()
        result.errors.extend(cluster.crashes)
    _judge(result, config)
    result.seconds = time.monotonic() - started
    if result.passed:  # keep nothing but a history the caller asked for
        shutil.rmtree(data_dir, ignore_errors=True)
        result.data_dir = None
        if config.history is None:
            result.history = ""
    return result


async def _drive(cluster: ChaosCluster, writer: HistoryWriter, config: ChaosConfig,
                 episodes: List[Episode], result: ChaosResult, log: Callable[[str], None]) -> None:
    workload = Workload(cluster.client_addresses, writer,
                        WorkloadConfig(clients=config.clients, keys=config.keys, seed=config.seed))
    nemesis = Nemesis(cluster, log)
    if await _wait_for_leader(cluster, 20.0) is None:
        raise TimeoutError("no leader was elected within 20 s of starting")
    t0 = time.monotonic()
    try:
        await asyncio.gather(workload.run(t0 + config.duration), nemesis.run(episodes, t0, t0 + config.duration))
    finally:
        result.episodes = [str(e) for e in nemesis.done]
    log(f"{time.monotonic() - t0:6.2f} s  workload done ({workload.ops} ops); healing")
    await nemesis.heal()
    statuses = await _converge(cluster, nemesis, config.converge_timeout, result, "of healing")
    if statuses is None:
        return
    final = await workload.final_reads(time.monotonic() + config.converge_timeout)
    missing = [k for k in workload.keys if k not in final]
    if missing:
        result.errors.append(f"after healing, the final reads of {missing} got no answer")
    statuses = await _converge(cluster, nemesis, config.converge_timeout, result, "after the final reads")
    if statuses is None:
        return
    result.diverged = divergence(statuses)
    log(f"{time.monotonic() - t0:6.2f} s  converged: members {sorted(statuses)} at commit index "
        f"{max(s['commit_index'] for s in statuses.values())}")
    history = load_history(result.history)
    result.lost = lost_writes(history, final)


async def _wait_for_leader(cluster: ChaosCluster, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = await cluster.leader()
        if leader is not None:
            return leader
        await asyncio.sleep(0.1)
    return None


async def _converge(cluster: ChaosCluster, nemesis: Nemesis, timeout: float,
                    result: ChaosResult, what: str) -> Optional[Dict[int, Dict[str, Any]]]:
    """The members' statuses once they are quiet (every member answers and has committed the
    leader's whole log) and report the same state digest. Quiet but still different at the
    deadline: those statuses, for `divergence` to report. Never quiet: None, with an error
    naming every node's state.

    `applied_index` is not compared: it counts only entries handed to the application (not
    no-ops or configuration entries), and a node restored from a snapshot reports the
    snapshot's index, so equal states may carry different labels.
    """
    deadline = time.monotonic() + timeout
    quiet: Optional[Dict[int, Dict[str, Any]]] = None
    while True:
        members = await nemesis.members()
        statuses = await cluster.statuses()
        leaders = [s for s in statuses.values() if s["role"] == "leader"]
        if leaders and all(i in statuses for i in members):
            last = max(leaders, key=lambda s: s["term"])["last_index"]
            wanted = {i: statuses[i] for i in members}
            if all(s["commit_index"] == s["last_index"] == last for s in wanted.values()):
                quiet = wanted
                if len({s["digest"] for s in wanted.values()}) == 1:
                    return wanted
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if quiet is not None:
        return quiet
    states = "; ".join(
        f"node {n.id}: " + (f"{s['role']} term {s['term']} commit {s['commit_index']} applied "
                            f"{s['applied_index']} last {s['last_index']} members {s['members']}"
                            if (s := statuses.get(n.id)) else
                            "paused" if n.paused else "running, not answering" if n.running else "down")
        for n in cluster.nodes.values() if n.process is not None)
    result.errors.append(f"the members {members} did not converge within {timeout:g} s {what} ({states})")
    return None


def _judge(result: ChaosResult, config: ChaosConfig) -> None:
    try:
        history = load_history(result.history)
    except (OSError, ValueError) as exc:
        result.errors.append(f"cannot read the history: {exc}")
        return
    result.ops = len(history)
    result.unknown = sum(1 for o in history if o.status == "unknown")
    verdict = check(history, timeout=config.check_timeout)
    result.linearizable = verdict.linearizable
    result.explanation = verdict.explanation
