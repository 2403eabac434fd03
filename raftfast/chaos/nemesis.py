"""Nemeses: the faults a chaos run injects, and the seeded schedule that says when.

A schedule is a list of episodes that do not overlap: each starts a fault, holds it, and heals
it before the next starts, so every fault is followed by a stretch in which the cluster must
recover. Which node a fault hits (the leader, a random follower, which halves) is decided when
the episode starts, from the episode's own seed: a run replays its choices, not its timing.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set

from ..kv.client import KVClient
from ..kv.errors import KVError
from .cluster import ChaosCluster, ChaosNode

__all__ = ["Episode", "NEMESES", "Nemesis", "bridge", "isolate", "mute", "deafen", "one_way", "parse_nemeses",
           "schedule", "split"]

NEMESES: Dict[str, str] = {
    "kill-follower": "SIGKILL a follower, restart it",
    "kill-leader": "SIGKILL the leader, restart it",
    "kill-majority": "SIGKILL a majority of the members at once, restart them one by one",
    "kill-all": "SIGKILL every member, restart them all",
    "pause-follower": "SIGSTOP a follower for longer than the election timeout, then SIGCONT",
    "pause-leader": "SIGSTOP the leader for longer than the election timeout, then SIGCONT",
    "partition-halves": "split the members into a majority and a minority",
    "partition-leader": "isolate the leader from every other node",
    "partition-bridge": "two groups that cannot talk, and one node that talks to both",
    "partition-flap": "a new random partition (or none) every 0.2-0.6 s",
    "leader-mute": "one way: nobody hears the leader, while it hears everyone",
    "leader-deaf": "one way: the leader hears nobody, while everyone hears it",
    "one-way-random": "a random set of one-way link cuts (each direction of each link cut with p=0.3)",
    "netns-partition": "a halves/leader/bridge partition as kernel blackhole routes between network namespaces",
    "member-add": "add a new server while a follower is down, then remove it again",
    "member-remove": "remove a follower while another is partitioned, then re-add it with a wiped disk",
    "member-remove-leader": "remove the leader while a follower is paused, then re-add it with a wiped disk",
    "transfer-leader": "TRANSFER_LEADER to a random follower, again every 0.3-0.8 s, under load",
}

ELECTION_TIMEOUT_MAX = 0.3  # seconds: `raftfast serve`'s default 30 ticks of 10 ms
_LENGTH = {  # (shortest, longest) seconds each fault is held
    "pause-follower": (2.5 * ELECTION_TIMEOUT_MAX, 2.0),
    "pause-leader": (2.5 * ELECTION_TIMEOUT_MAX, 2.0),
    "kill-all": (0.3, 1.0),
    "partition-flap": (2.0, 3.0),
    "member-add": (2.0, 3.0),
    "member-remove": (2.0, 3.0),
    "member-remove-leader": (2.0, 3.0),
    "transfer-leader": (1.5, 2.5),
}
_DEFAULT_LENGTH = (0.8, 2.5)
_GAP = (0.8, 1.5)  # healed time between episodes
_WARMUP, _COOLDOWN = 1.0, 0.5


@dataclass(frozen=True)
class Episode:
    nemesis: str
    start: float  # seconds after the workload starts
    end: float  # healed by then
    seed: int

    def __str__(self) -> str:
        return f"{self.start:5.1f}-{self.end:5.1f} s {self.nemesis}"


def parse_nemeses(text: str) -> List[str]:
    """`all` or a comma-separated list of names; ValueError naming the unknown ones."""
    if text.strip() == "all":
        return list(NEMESES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in NEMESES]
    if unknown or not names:
        raise ValueError(f"unknown nemesis {', '.join(unknown) or '(none)'}; choose from all, {', '.join(NEMESES)}")
    return list(dict.fromkeys(names))


def schedule(nemeses: Sequence[str], duration: float, seed: int) -> List[Episode]:
    """Episodes for a run of `duration` seconds: the nemeses in a seeded order (each once per
    round), separated by healed gaps, all healed `_COOLDOWN` s before the end."""
    for name in nemeses:
        if name not in NEMESES:
            raise ValueError(f"unknown nemesis {name!r}")
    rng = random.Random(seed)
    episodes: List[Episode] = []
    order: List[str] = []
    t = _WARMUP
    while nemeses:
        if not order:
            order = list(nemeses)
            rng.shuffle(order)
        name = order.pop()
        lo, hi = _LENGTH.get(name, _DEFAULT_LENGTH)
        end = t + rng.uniform(lo, hi)
        if end > duration - _COOLDOWN:
            break
        episodes.append(Episode(name, round(t, 3), round(end, 3), rng.getrandbits(32)))
        t = end + rng.uniform(*_GAP)
    return episodes


# -- partitions as "who cannot talk to whom" -------------------------------------------------


def _cut(a: Sequence[int], b: Sequence[int]) -> Dict[int, Set[int]]:
    cut: Dict[int, Set[int]] = {}
    for x in a:
        for y in b:
            cut.setdefault(x, set()).add(y)
            cut.setdefault(y, set()).add(x)
    return cut


def split(members: Sequence[int], rng: random.Random) -> Dict[int, Set[int]]:
    """A random minority cut off from the majority."""
    shuffled = list(members)
    rng.shuffle(shuffled)
    minority = rng.randint(1, (len(shuffled) - 1) // 2) if len(shuffled) > 2 else 1
    return _cut(shuffled[:minority], shuffled[minority:])


def isolate(node: int, members: Sequence[int]) -> Dict[int, Set[int]]:
    return _cut([node], [m for m in members if m != node])


def mute(node: int, members: Sequence[int]) -> Dict[int, Set[int]]:
    """One way: `node`'s frames to the others vanish; theirs still reach it."""
    return {node: {m for m in members if m != node}}


def deafen(node: int, members: Sequence[int]) -> Dict[int, Set[int]]:
    """One way: the others' frames to `node` vanish; its own still reach them."""
    return {m: {node} for m in members if m != node}


def one_way(members: Sequence[int], rng: random.Random, p: float = 0.3) -> Dict[int, Set[int]]:
    """Each direction of each link cut on its own with probability p."""
    cut: Dict[int, Set[int]] = {}
    for a in members:
        for b in members:
            if a != b and rng.random() < p:
                cut.setdefault(a, set()).add(b)
    return cut


def bridge(members: Sequence[int], rng: random.Random) -> Dict[int, Set[int]]:
    """One node talks to everyone; the others form two sides that cannot talk to each other."""
    shuffled = list(members)
    rng.shuffle(shuffled)
    rest = shuffled[1:]
    half = len(rest) // 2
    return _cut(rest[:half], rest[half:])


# -- carrying episodes out ----------------------------------------------------------------------


class Nemesis:
    """Runs a schedule against a ChaosCluster; `log` receives one line per thing it did."""

    def __init__(self, cluster: ChaosCluster, log: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.log = log
        self.done: List[Episode] = []  # as carried out: actual start, planned hold
        self._started = 0.0

    async def run(self, episodes: Sequence[Episode], started: float, until: float) -> None:
        """Play `episodes` from time.monotonic() == `started`; none starts that could not hold
        its fault until `until`. An episode that heals late (restarts take time) delays the
        rest, so each keeps its length and the healed gap before it."""
        self._started = started
        delay = 0.0
        for planned in episodes:
            length = planned.end - planned.start
            start = max(planned.start + delay, self._now())
            if started + start + length > until:
                self.log(f"{self._now():6.2f} s  out of time: {len(episodes) - len(self.done)} episode(s) left out")
                break
            await self._sleep_until(start)
            episode = Episode(planned.nemesis, round(start, 3), round(start + length, 3), planned.seed)
            handler = getattr(self, "_" + episode.nemesis.replace("-", "_"))
            self.log(f"{self._now():6.2f} s  {episode.nemesis}: start")
            await handler(episode, random.Random(episode.seed))
            self.done.append(episode)
            self.log(f"{self._now():6.2f} s  {episode.nemesis}: healed")
            delay = max(0.0, self._now() - planned.end)

    async def heal(self) -> None:
        """Undo every fault: resume, reconnect, restart every member that is down."""
        cluster = self.cluster
        for node in cluster.nodes.values():
            cluster.resume(node)
        cluster.heal_network()
        for i in await self.members():
            await cluster.restart(cluster.nodes[i])
        await self.settle_membership()

    async def members(self) -> List[int]:
        """The members as the leader sees them (the initial members while there is none)."""
        for _ in range(20):
            leader = await self.cluster.leader()
            if leader is not None:
                statuses = await self.cluster.statuses()
                if leader.id in statuses:
                    return list(statuses[leader.id]["members"])
            await asyncio.sleep(0.1)
        return [i for i in self.cluster.initial]

    # -- helpers -----------------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic() - self._started

    async def _sleep_until(self, at: float) -> None:
        delay = at - self._now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _roles(self, rng: random.Random) -> tuple:
        """(leader or None, the other live members, shuffled)."""
        members = await self.members()
        leader = await self.cluster.leader()
        nodes = self.cluster.nodes
        others = [nodes[i] for i in members if leader is None or i != leader.id]
        rng.shuffle(others)
        return leader, others

    async def _follower(self, rng: random.Random) -> Optional[ChaosNode]:
        leader, others = await self._roles(rng)
        return others[0] if others else None

    async def _the_leader(self, rng: random.Random) -> Optional[ChaosNode]:
        leader, others = await self._roles(rng)
        return leader if leader is not None else (others[0] if others else None)

    def _admin(self) -> KVClient:
        addresses = [str(n.client) for n in self.cluster.nodes.values() if n.running]
        return KVClient(addresses, timeout=3.0)

    async def _change(self, what: str, node_id: int) -> bool:
        """add_server / remove_server through the leader; True once it committed."""
        client = self._admin()
        try:
            await getattr(client, what)(node_id)
            self.log(f"{self._now():6.2f} s    {what}({node_id}): ok")
            return True
        except KVError as exc:  # refused, or no answer in time: it may still commit
            self.log(f"{self._now():6.2f} s    {what}({node_id}): {type(exc).__name__}: {exc}")
            return False
        finally:
            await client.close()

    # -- kills and pauses --------------------------------------------------------------------

    async def _kill(self, victims: List[ChaosNode], episode: Episode) -> None:
        for node in victims:
            self.cluster.kill(node)
        self.log(f"{self._now():6.2f} s    killed {[n.id for n in victims]}")
        await self._sleep_until(episode.end)
        for node in victims:
            await self.cluster.restart(node)

    async def _kill_follower(self, episode: Episode, rng: random.Random) -> None:
        node = await self._follower(rng)
        await self._kill([node] if node else [], episode)

    async def _kill_leader(self, episode: Episode, rng: random.Random) -> None:
        node = await self._the_leader(rng)
        await self._kill([node] if node else [], episode)

    async def _kill_majority(self, episode: Episode, rng: random.Random) -> None:
        members = await self.members()
        rng.shuffle(members)
        await self._kill([self.cluster.nodes[i] for i in members[: len(members) // 2 + 1]], episode)

    async def _kill_all(self, episode: Episode, rng: random.Random) -> None:
        await self._kill([self.cluster.nodes[i] for i in await self.members()], episode)

    async def _pause(self, node: Optional[ChaosNode], episode: Episode) -> None:
        if node is not None:
            self.cluster.pause(node)
            self.log(f"{self._now():6.2f} s    paused {node.id}")
        await self._sleep_until(episode.end)
        if node is not None:
            self.cluster.resume(node)

    async def _pause_follower(self, episode: Episode, rng: random.Random) -> None:
        await self._pause(await self._follower(rng), episode)

    async def _pause_leader(self, episode: Episode, rng: random.Random) -> None:
        await self._pause(await self._the_leader(rng), episode)

    # -- partitions --------------------------------------------------------------------------

    async def _partition(self, cut: Dict[int, Set[int]], episode: Episode, netns: bool = False) -> None:
        self.cluster.partition(cut, netns=netns)
        self.log(f"{self._now():6.2f} s    cut {_show(cut)}{' (netns)' if netns else ''}")
        await self._sleep_until(episode.end)
        self.cluster.partition({}, netns=netns)

    async def _partition_halves(self, episode: Episode, rng: random.Random) -> None:
        await self._partition(split(await self.members(), rng), episode)

    async def _partition_leader(self, episode: Episode, rng: random.Random) -> None:
        leader = await self._the_leader(rng)
        members = await self.members()
        await self._partition(isolate(leader.id, members) if leader else {}, episode)

    async def _partition_bridge(self, episode: Episode, rng: random.Random) -> None:
        await self._partition(bridge(await self.members(), rng), episode)

    async def _partition_flap(self, episode: Episode, rng: random.Random) -> None:
        members = await self.members()
        while self._now() < episode.end:
            choice = rng.randrange(4)
            if choice == 0:
                cut = split(members, rng)
            elif choice == 1:
                cut = isolate(rng.choice(members), members)
            elif choice == 2:
                cut = bridge(members, rng)
            else:
                cut = {}
            self.cluster.partition(cut)
            self.log(f"{self._now():6.2f} s    cut {_show(cut)}")
            await asyncio.sleep(min(rng.uniform(0.2, 0.6), max(0.0, episode.end - self._now())))
        self.cluster.partition({})

    async def _leader_mute(self, episode: Episode, rng: random.Random) -> None:
        """Followers stop hearing the leader and elect another; the old one, still hearing
        everything, must learn of the new term and step down (check-quorum, §5.1)."""
        leader = await self._the_leader(rng)
        await self._partition(mute(leader.id, await self.members()) if leader else {}, episode)

    async def _leader_deaf(self, episode: Episode, rng: random.Random) -> None:
        """The leader's heartbeats still arrive, so no follower times out, but no reply does:
        only check-quorum (thesis §6.2) makes it step down so that the cluster can move on."""
        leader = await self._the_leader(rng)
        await self._partition(deafen(leader.id, await self.members()) if leader else {}, episode)

    async def _one_way_random(self, episode: Episode, rng: random.Random) -> None:
        await self._partition(one_way(await self.members(), rng), episode)

    async def _netns_partition(self, episode: Episode, rng: random.Random) -> None:
        members = await self.members()
        choice = rng.randrange(3)
        if choice == 0:
            cut = split(members, rng)
        elif choice == 1:
            leader = await self._the_leader(rng)
            cut = isolate(leader.id, members) if leader else split(members, rng)
        else:
            cut = bridge(members, rng)
        await self._partition(cut, episode, netns=True)

    # -- membership and leadership ---------------------------------------------------------------

    async def _member_add(self, episode: Episode, rng: random.Random) -> None:
        cluster = self.cluster
        members = await self.members()
        # a spare that is not running was never added or its removal committed: safe to wipe
        spare = next((n for i, n in sorted(cluster.nodes.items())
                      if i not in cluster.initial and i not in members and not n.running), None)
        down = await self._follower(rng)
        if down is not None:
            cluster.kill(down)
            self.log(f"{self._now():6.2f} s    killed {down.id}")
        if spare is not None:
            cluster.wipe(spare)  # a new server starts empty
            await cluster.restart(spare)
            await self._change("add_server", spare.id)
        await self._sleep_until(episode.end)
        if down is not None:
            await cluster.restart(down)
        await self.settle_membership()

    async def _member_remove(self, episode: Episode, rng: random.Random) -> None:
        leader, others = await self._roles(rng)
        if len(others) >= 2:
            victim, cut = others[0], others[1]
            self.cluster.partition(isolate(cut.id, await self.members()))
            self.log(f"{self._now():6.2f} s    isolated {cut.id}")
            await self._change("remove_server", victim.id)
        await self._sleep_until(episode.end)
        self.cluster.partition({})
        await self.settle_membership()

    async def _member_remove_leader(self, episode: Episode, rng: random.Random) -> None:
        leader, others = await self._roles(rng)
        paused = others[0] if leader is not None and others else None
        if paused is not None:
            self.cluster.pause(paused)
            self.log(f"{self._now():6.2f} s    paused {paused.id}")
            await self._change("remove_server", leader.id)  # type: ignore[union-attr]
        await self._sleep_until(episode.end)
        if paused is not None:
            self.cluster.resume(paused)
        await self.settle_membership()

    async def settle_membership(self) -> None:
        """Back to the initial members: retire every spare that was added, and re-add, with a
        wiped disk, every initial member that a committed change removed.

        A node's disk is wiped only after remove_server answered OK for it, which means the
        leader had committed a configuration without it: wiping a member's disk would break
        Raft's assumptions and make the run report violations the protocol is not to blame for.
        """
        cluster = self.cluster
        for _ in range(3):
            members = await self.members()
            extra = [i for i in members if i not in cluster.initial]
            missing = [i for i in cluster.initial if i not in members]
            if not extra and not missing:
                return
            for i in extra:
                if await self._change("remove_server", i):
                    cluster.kill(cluster.nodes[i])
            for i in missing:
                if await self._change("remove_server", i):  # OK: its removal is committed
                    node = cluster.nodes[i]
                    cluster.kill(node)
                    cluster.wipe(node)
                    await cluster.restart(node)
                    await self._change("add_server", i)

    async def _transfer_leader(self, episode: Episode, rng: random.Random) -> None:
        """TRANSFER_LEADER (thesis §3.10) to a random follower, again and again, under load."""
        while self._now() < episode.end:
            leader, others = await self._roles(rng)
            if leader is not None and others:
                client = self._admin()
                try:
                    await client.transfer_leadership(others[0].id)
                    outcome = "ok"
                except KVError as exc:  # refused, superseded, or not in time
                    outcome = f"{type(exc).__name__}: {exc}"
                finally:
                    await client.close()
                self.log(f"{self._now():6.2f} s    transfer {leader.id} -> {others[0].id}: {outcome}")
            await asyncio.sleep(min(rng.uniform(0.3, 0.8), max(0.0, episode.end - self._now())))


def _show(cut: Dict[int, Set[int]]) -> str:
    """`1->[2, 3]`: node 1's frames to 2 and 3 vanish."""
    return "nothing" if not cut else " ".join(f"{a}->{sorted(b)}" for a, b in sorted(cut.items()) if b)
