"""The chaos workload: concurrent clients whose every operation is recorded in the history format
(`raftfast.testing.history`).

Keys are of two kinds, so that the checks after the run can say which writes survived:
- `a<i>` append keys: appends and gets. Every appended value is unique (`[worker.n]`), so the
  final value of the key spells out exactly which appends took effect, once each, in order.
- `r<i>` register keys: puts, compare-and-sets (expecting the last value the worker saw), a
  few deletes, and gets. Every written value is unique too.

Outcomes, from the client's point of view:
- a reply is `ok` (a cas that answered CAS_FAILED is `ok` with output "fail": the server proved
  it compared and did not write);
- no reply in time, a lost connection, or an error reply is `unknown`: the KV client retries a
  write after NOT_LEADER with the same (client id, seq), so by the time an error comes back an
  earlier attempt may have been committed, and `fail` (proven not applied) is never recorded.
After an `unknown` the worker continues as a new history client with a new KV session: the old
operation may still take effect at any time, as the checker assumes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..kv.client import KVClient
from ..testing.history import HistoryWriter

__all__ = ["FINAL_CLIENT", "Workload", "WorkloadConfig", "keys_for"]

logger = logging.getLogger("raftfast.chaos.workload")

FINAL_CLIENT = 1_000_000
"""History client ids from here on are the final reads after healing."""


@dataclass(frozen=True)
class WorkloadConfig:
    clients: int = 5
    keys: int = 8
    timeout: float = 1.5  # seconds per operation before it is recorded unknown
    seed: int = 1


def keys_for(count: int) -> List[str]:
    """Half append keys, half register keys (at least one append key)."""
    return [("a" if i % 2 == 0 else "r") + str(i) for i in range(count)]


class Workload:
    def __init__(self, addresses: Sequence[str], writer: HistoryWriter, config: WorkloadConfig) -> None:
        self.addresses = list(addresses)
        self.writer = writer
        self.config = config
        self.keys = keys_for(config.keys)
        self.ops = 0

    def _client(self, rng: random.Random) -> KVClient:
        addresses = list(self.addresses)
        rng.shuffle(addresses)
        return KVClient(addresses, timeout=self.config.timeout)

    async def run(self, deadline: float) -> None:
        """Every worker issues operations, one at a time, until time.monotonic() >= deadline."""
        await asyncio.gather(*(self._worker(w, deadline) for w in range(self.config.clients)))

    async def _worker(self, worker: int, deadline: float) -> None:
        rng = random.Random(self.config.seed * 7919 + worker)
        process = worker  # the history's client id; a new one after every unknown outcome
        seen: Dict[str, str] = {}  # register key -> the last value this worker saw there
        client = self._client(rng)
        n = 0
        try:
            while time.monotonic() < deadline:
                n += 1
                key = rng.choice(self.keys)
                value = f"[{worker}.{n}]"
                op, expected = self._choose(rng, key, seen)
                ok = await self._perform(client, process, op, key, value, expected, seen)
                self.ops += 1
                if not ok:
                    await client.close()
                    client = self._client(rng)
                    process += self.config.clients
        finally:
            await client.close()

    def _choose(self, rng: random.Random, key: str, seen: Dict[str, str]) -> Tuple[str, Optional[str]]:
        """(op, the value a cas expects)."""
        roll = rng.random()
        if key[0] == "a":
            return ("get" if roll < 0.3 else "append"), None
        if roll < 0.35:
            return "get", None
        if roll < 0.6 and key in seen:
            return "cas", seen[key]
        return ("put" if roll < 0.95 else "delete"), None

    async def _perform(self, client: KVClient, process: int, op: str, key: str, value: str,
                       expected: Optional[str], seen: Dict[str, str]) -> bool:
        """Send the op, record its outcome; False when the outcome is unknown."""
        pending = self.writer.invoke(process, op, key,  # type: ignore[arg-type]
                                     value if op in ("append", "put", "cas") else None, expected)
        try:
            if op == "get":
                result = await client.get(key)
                output = None if result is None else result.decode()
                pending.ok(output)
                if output is None:
                    seen.pop(key, None)
                else:
                    seen[key] = output
            elif op == "append":
                await client.append(key, value)
                pending.ok()
            elif op == "put":
                await client.put(key, value)
                pending.ok()
                seen[key] = value
            elif op == "delete":
                await client.delete(key)
                pending.ok()
                seen.pop(key, None)
            else:
                applied = await client.cas(key, expected, value)
                pending.ok("ok" if applied else "fail")
                if applied:
                    seen[key] = value
            return True
        except Exception as exc:  # timeout, lost connection, error reply: it may have applied
            logger.debug("%s %s: unknown (%s: %s)", op, key, type(exc).__name__, exc)
            pending.unknown()
            seen.pop(key, None)
            return False

    async def final_reads(self, deadline: float) -> Dict[str, Optional[str]]:
        """Read every key once more (recorded as client FINAL_CLIENT + i), retrying until an
        answer or the deadline; the keys that never answered are missing from the result."""
        rng = random.Random(self.config.seed)
        results: Dict[str, Optional[str]] = {}
        for i, key in enumerate(self.keys):
            process = FINAL_CLIENT + i
            while key not in results and time.monotonic() < deadline:
                client = self._client(rng)
                pending = self.writer.invoke(process, "get", key)
                try:
                    result = await client.get(key)
                except Exception:  # not answered: try again as a new history client
                    pending.unknown()
                    process += len(self.keys)
                    await asyncio.sleep(0.1)
                else:
                    results[key] = None if result is None else result.decode()
                    pending.ok(results[key])
                finally:
                    await client.close()
        return results
