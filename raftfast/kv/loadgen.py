"""The load generator behind `raftfast bench`: many pipelined writers on lean protocols.

It runs in its own process (the cluster's nodes are other processes) on its own loop. Each
simulated client is one connection with its own client id. No futures: latency is stamped per
request id. The per-write loops, encoding a send's puts and reading an arrival's responses, are
`raftfast.kv._loadgen`'s (compiled when built). Two modes:

- closed loop (no `rate`): each client keeps `depth` puts in flight; every reply is answered
  with a new request in the same write, so the request stream is as batched as the cluster's
  replies. This measures the maximum throughput, not latency at a given load.
- open loop (`rate` writes/s): write i is due at start + i / rate whatever the cluster does, and
  its latency runs from that scheduled time, not from when it was actually sent, so a stalled
  cluster (or generator) cannot hide latency by delaying the sends (coordinated omission). A
  client keeps at most `depth` writes in flight; writes due beyond that wait in its backlog, still
  stamped with their scheduled time, so they count against latency instead of being dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import struct
import time
from array import array
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from ..runtime.address import Address, parse_address
from ..runtime.loop import run
from ..runtime.ratelog import RateLimitedLog
from ..security.credentials import ClientCredentials
from ._loadgen import MALFORMED, MAX_RESPONSE, NOT_LEADER, encode_puts, parse_responses
from .protocol import NO_VALUE, RESPONSE, Op, decode_not_leader, encode_request

__all__ = ["LoadSpec", "LoadReport", "Schedule", "generate_load"]

logger = logging.getLogger("raftfast.kv.loadgen")

_TAIL = struct.Struct("<HII")  # the end of a request head: key, value and expected lengths
_LENGTH = struct.Struct("<I")  # a response's length prefix
_ratelog = RateLimitedLog(logger)  # a broken server breaks every connection, over and over
_TICK = 0.001  # seconds between the open loop's wakeups: each sends the writes that fell due
_BURST = 16  # consecutive due writes given to one client (at most depth/2): one write() per burst
_DRAIN = 1.0  # seconds the open loop waits after its window for the window's writes to finish


@dataclass
class LoadSpec:
    targets: List[str]  # client addresses; the first that is leader is used
    clients: int = 64
    depth: int = 128  # requests in flight per client (closed loop), its cap (open loop)
    value_size: int = 64
    keys: int = 100_000  # distinct keys written
    warmup: float = 1.0  # seconds before measuring
    duration: float = 10.0  # seconds measured
    seed: int = 0
    credentials: Optional[ClientCredentials] = None  # for a cluster with TLS on its client port
    rate: Optional[float] = None  # writes/s offered by this process (open loop); None: closed loop


@dataclass
class LoadReport:
    """What one load process measured (latencies in ns, in completion order)."""

    completed: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: bytes = b""  # array('q') of ns
    per_second: List[int] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's CPU time in the measured window
    # open loop only: writes due in the window, those that had to wait for the in-flight cap,
    # and those not acknowledged by the end of the drain (their latency is a lower bound)
    scheduled: int = 0
    held_back: int = 0
    unfinished: int = 0
    pacer_lag_us: List[float] = field(default_factory=list)  # p50, p99, max of how late it woke


class Schedule:
    """When the open loop's writes are due: write i at `start_ns + i / rate`, whatever happened
    to the writes before it."""

    def __init__(self, rate: float, start_ns: int) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number of writes/s, not {rate}")
        self.start_ns = start_ns
        self.interval_ns = 1e9 / rate

    def due(self, now_ns: int) -> int:
        """How many writes are due by `now_ns` (write 0 is due at the start)."""
        if now_ns < self.start_ns:
            return 0
        return int((now_ns - self.start_ns) / self.interval_ns) + 1

    def time_of(self, index: int) -> int:
        """The scheduled send time of write `index`, ns."""
        return self.start_ns + int(index * self.interval_ns)


_NEVER = 1 << 63  # a window bound no stamp reaches


class _Writer(asyncio.Protocol):
    """One client: a connection that keeps `depth` puts in flight (closed loop), or sends the
    writes the open loop hands it, at most `depth` in flight."""

    def __init__(self, gen: "_Generator", client_id: int) -> None:
        self.gen = gen
        self.client_id = client_id
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = b""
        self.next_seq = 1
        # seq (= request id) -> stamp, ns: the send time (closed loop) or the scheduled time (open).
        # Seqs go in ascending and only leave, so its first key is the oldest in flight: the ack
        self.inflight: Dict[int, int] = {}
        # open loop: the due writes not yet sent, as runs (first write index, count) in schedule order
        self.backlog: Deque[Tuple[int, int]] = deque()
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.redirect: Optional[Address] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, count: int) -> None:
        """Closed loop: send `count` new puts, stamped once written."""
        seq = self.next_seq
        self.next_seq = seq + count
        inflight = self.inflight
        gen = self.gen
        data, gen.key_cursor = encode_puts(gen.tails, gen.key_cursor, self.client_id, seq, count,
                                           next(iter(inflight), seq))
        self.transport.write(data)  # type: ignore[union-attr]
        inflight.update(dict.fromkeys(range(seq, seq + count), time.perf_counter_ns()))

    def _due(self, first: int, count: int) -> bytes:
        """Open loop: the puts of writes first..first+count-1, put in flight (by the kernel, no
        list of stamps) with their scheduled times."""
        seq = self.next_seq
        self.next_seq = seq + count
        inflight = self.inflight
        gen = self.gen
        schedule: Schedule = gen.schedule  # type: ignore[assignment]
        data, gen.key_cursor = encode_puts(gen.tails, gen.key_cursor, self.client_id, seq, count,
                                           next(iter(inflight), seq), inflight, schedule.start_ns,
                                           schedule.interval_ns, first)
        return data

    def take_over(self, old: "_Writer") -> None:
        """Carry the session of `old` (a lost connection) over to this one: the same seqs, its
        writes in flight resent; in the closed loop, topped up to `depth` again, since the
        replies read just before a redirect freed slots that nothing refilled."""
        self.next_seq, self.inflight, self.backlog = old.next_seq, old.inflight, old.backlog
        self.resend()
        gen = self.gen
        if gen.schedule is None and gen.running and len(self.inflight) < gen.spec.depth:
            self.send(gen.spec.depth - len(self.inflight))

    def resend(self) -> None:
        """After a reconnect: the session's writes in flight again, keeping their stamps, so the
        reconnect counts against their latency."""
        seqs = sorted(self.inflight)
        if seqs:
            gen = self.gen
            out = []
            for seq in seqs:  # not consecutive in general: one at a time (a reconnect is rare)
                data, gen.key_cursor = encode_puts(gen.tails, gen.key_cursor, self.client_id, seq, 1, seqs[0])
                out.append(data)
            self.transport.write(b"".join(out))  # type: ignore[union-attr]
        self.send_backlog()

    def offer(self, first: int, count: int) -> None:
        """Open loop: send due writes first..first+count-1 now as far as the in-flight cap allows;
        the rest wait in the backlog (behind any already there, so writes go out in schedule
        order)."""
        transport = self.transport
        gen = self.gen
        if self.backlog or transport is None or transport.is_closing():
            room = 0
        else:
            room = gen.spec.depth - len(self.inflight)
        if room >= count:
            transport.write(self._due(first, count))  # type: ignore[union-attr]
            return
        if room > 0:
            transport.write(self._due(first, room))  # type: ignore[union-attr]
            first += room
            count -= room
        self.backlog.append((first, count))
        if gen.measuring:  # count the window's writes only (stamps ascend with the index)
            lo = gen.window[0]
            time_of = gen.schedule.time_of  # type: ignore[union-attr]
            # the run is in the window but when it straddles its start: one stamp, not a search
            gen.held_back += count if time_of(first) >= lo else count - bisect_left(range(first, first + count), lo,
                                                                                    key=time_of)

    def send_backlog(self) -> None:
        """Open loop: as many of the backlog's writes as the in-flight cap has room for, oldest
        first, in one write."""
        backlog = self.backlog
        room = self.gen.spec.depth - len(self.inflight)
        out = []
        while backlog and room > 0:
            first, count = backlog.popleft()
            if count > room:
                backlog.appendleft((first + room, count - room))
                count = room
            out.append(self._due(first, count))
            room -= count
        if out:
            self.transport.write(b"".join(out))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        gen = self.gen
        lo, hi = gen.window
        pos, done, errors, halt = parse_responses(data, 0, self.next_seq, self.inflight, time.perf_counter_ns(),
                                                  lo, hi, gen.latencies)
        gen.errors += errors
        if done and gen.measuring:  # before a NOT_LEADER too: those writes were applied
            gen.completed += done
            gen.bucket_count += done
        if halt == NOT_LEADER:
            (length,) = _LENGTH.unpack_from(data, pos)
            _, address = decode_not_leader(data[pos + RESPONSE.size : pos + 4 + length])
            self.redirect = parse_address(address) if address else None
            self._drop()
            return
        if halt == MALFORMED:  # the stream cannot be followed past it: reconnect, resend
            (length,) = _LENGTH.unpack_from(data, pos)
            _ratelog.log(logging.WARNING, "length", "closing the connection: response length %d is not in %d..%d",
                         length, RESPONSE.size - 4, MAX_RESPONSE)
            self._drop()
            return
        self.buffer = data[pos:] if pos < len(data) else b""
        if done:
            if gen.schedule is not None:
                self.send_backlog()
            elif gen.running:
                self.send(done)


    def _drop(self) -> None:
        """Close the connection after a response that ends it (counted as an error); the
        client reconnects and resends what is still in flight."""
        self.gen.errors += 1
        self.transport.close()  # type: ignore[union-attr]
        self.buffer = b""


class _Generator:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.value = bytes(self.rng.getrandbits(8) for _ in range(spec.value_size))
        self.keys = [b"key-%08d" % i for i in range(spec.keys)]
        self.rng.shuffle(self.keys)  # written in this (random) order, round and round
        # each request is a head packed per request (see encode_puts) and this per-key tail
        vlen = len(self.value)
        self.tails = [_TAIL.pack(len(k), vlen, NO_VALUE) + k + self.value for k in self.keys]
        self.key_cursor = 0
        self.latencies = array("q")
        # a completed write's latency is recorded when its stamp lies in [lo, hi): the closed
        # loop records what completes while measuring, the open loop what was due in the window
        self.window = (_NEVER, _NEVER)
        self.completed = 0
        self.errors = 0
        self.bucket_count = 0
        self.per_second: List[int] = []
        self.measuring = False
        self.running = True
        # open loop: the schedule, the writers it feeds (the current connection of each client),
        # how many writes it has handed out, and whose turn it is
        self.schedule: Optional[Schedule] = None
        self.writers: List[Optional[_Writer]] = [None] * spec.clients
        self.all_connected = asyncio.Event()
        self.issued = 0
        self.turn = 0
        self.turn_used = 0
        self.burst = max(1, min(_BURST, spec.depth // 2))  # a burst never fills a client's cap alone
        self.held_back = 0
        self.pacer_lag = array("q")  # per wakeup while measuring: now - due time of the first write handed out
        credentials = spec.credentials
        self.ssl = credentials.ssl_context() if credentials is not None else None
        token = credentials.token() if credentials is not None else None
        self.auth = encode_request(Op.AUTH, 0, token) if token else b""  # request id 0: no write's

    async def run(self, report_progress) -> LoadReport:
        spec = self.spec
        leader = await _find_leader([parse_address(t) for t in spec.targets], spec.credentials)
        tasks = [asyncio.create_task(self._client(leader, i)) for i in range(spec.clients)]
        pacer = None
        if spec.rate is not None:
            await asyncio.wait_for(self.all_connected.wait(), 15.0)
            self.schedule = Schedule(spec.rate, time.perf_counter_ns())
            pacer = asyncio.create_task(self._pace())
        await asyncio.sleep(spec.warmup)
        self.measuring = True
        started = time.perf_counter()
        started_ns = time.perf_counter_ns()
        self.window = (started_ns if pacer is not None else 0, _NEVER)
        cpu_started = time.process_time()
        next_second = started + 1.0
        while True:
            now = time.perf_counter()
            if now >= started + spec.duration:
                break
            await asyncio.sleep(min(0.25, started + spec.duration - now, max(0.0, next_second - now)) or 0.001)
            now = time.perf_counter()
            if now >= next_second:
                self.per_second.append(self.bucket_count)
                self.bucket_count = 0
                next_second += 1.0
            report_progress(now - started, self.completed, self.errors)
        elapsed = time.perf_counter() - started
        ended_ns = time.perf_counter_ns()
        cpu = time.process_time() - cpu_started
        self.measuring = False
        report = LoadReport(self.completed, self.errors, elapsed, b"", self.per_second, cpu)
        if pacer is not None:
            if pacer.done():
                pacer.result()  # it only ends by failing: say why
            pacer.cancel()
            await asyncio.gather(pacer, return_exceptions=True)
            self._issue(self.schedule.due(ended_ns - 1))  # the window's last due writes
            self.window = (started_ns, ended_ns)
            report.unfinished = await self._drain(started_ns, ended_ns)
            report.scheduled = self.schedule.due(ended_ns - 1) - self.schedule.due(started_ns - 1)
            report.held_back = self.held_back
            report.errors = self.errors  # with the drain's
            if self.pacer_lag:
                lags = sorted(self.pacer_lag)
                report.pacer_lag_us = [lags[len(lags) // 2] / 1e3, lags[len(lags) * 99 // 100] / 1e3, lags[-1] / 1e3]
        else:
            self.window = (_NEVER, _NEVER)
        self.running = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report.latencies = self.latencies.tobytes()
        return report

    async def _pace(self) -> None:
        """Open loop: wake every tick and hand out the writes that fell due since the last."""
        due = self.schedule.due  # type: ignore[union-attr]
        while True:
            self._issue(due(time.perf_counter_ns()))
            await asyncio.sleep(_TICK)

    def _issue(self, upto: int) -> None:
        """Hand writes issued..upto-1 to the clients in turn, `burst` consecutive writes each,
        or after a late wakeup, when more than that per client fell due, one longer run each:
        the same due writes, one write() per client instead of several back to back."""
        i = self.issued
        if upto <= i:
            return
        if self.measuring:
            self.pacer_lag.append(time.perf_counter_ns() - self.schedule.time_of(i))  # type: ignore[union-attr]
        writers = self.writers
        clients = len(writers)
        turn, used = self.turn, self.turn_used
        burst = max(self.burst, -(-(upto - i + used) // clients))  # reaches no client twice
        while i < upto:
            take = min(upto - i, burst - used)
            writers[turn].offer(i, take)  # type: ignore[union-attr]
            i += take
            used += take
            if used == burst:
                turn = turn + 1 if turn + 1 < clients else 0
                used = 0
        if used >= self.burst:  # a longer run's client has had its burst
            turn = turn + 1 if turn + 1 < clients else 0
            used = 0
        self.issued, self.turn, self.turn_used = i, turn, used

    async def _drain(self, started_ns: int, ended_ns: int) -> int:
        """Open loop, after the window: wait (up to `_DRAIN` s) for the writes due in it, then
        record those still unacknowledged at their latency so far, a lower bound. Returns how
        many there were."""
        writers = [w for w in self.writers if w is not None]
        deadline = time.monotonic() + _DRAIN
        while time.monotonic() < deadline and any(w.inflight or w.backlog for w in writers):
            await asyncio.sleep(0.005)
        now = time.perf_counter_ns()
        time_of = self.schedule.time_of  # type: ignore[union-attr]
        unfinished = 0
        for w in writers:
            held = [time_of(j) for first, count in w.backlog for j in range(first, first + count)]
            for stamp in [*w.inflight.values(), *held]:
                if started_ns <= stamp < ended_ns:
                    unfinished += 1
                    self.latencies.append(now - stamp)
        return unfinished

    async def _client(self, address: Address, index: int) -> None:
        loop = asyncio.get_running_loop()
        client_id = (os.getpid() << 20 | index) + 1
        writer: Optional[_Writer] = None
        while self.running:
            try:
                _, proto = await loop.create_connection(lambda: _Writer(self, client_id), address.host, address.port,
                                                        ssl=self.ssl, server_hostname=address.host if self.ssl else None)
            except OSError:
                self.errors += 1
                await asyncio.sleep(0.1)
                continue
            if self.auth:
                proto.transport.write(self.auth)  # type: ignore[union-attr]
            if writer is not None:
                self.writers[index] = proto
                proto.take_over(writer)
            else:
                self.writers[index] = proto
                if all(w is not None for w in self.writers):
                    self.all_connected.set()
                if self.spec.rate is None:
                    proto.send(self.spec.depth)
            writer = proto
            await proto.lost
            if proto.redirect is not None:
                address = proto.redirect
            else:
                await asyncio.sleep(0.05)


async def _find_leader(targets: List[Address], credentials: Optional[ClientCredentials] = None,
                       timeout: float = 15.0) -> Address:
    """The client address of the current leader, asking each target in turn."""
    from .client import KVClient

    options = credentials.client_options() if credentials is not None else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for target in targets:
            client = KVClient([target], timeout=1.0, **options)
            try:
                status = await client.status()
            except Exception:
                continue
            finally:
                await client.close()
            leader = status.get("leader")
            address = status.get("client_addresses", {}).get(str(leader)) if leader else None
            if address:
                return parse_address(address)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no leader among {', '.join(map(str, targets))}")


def generate_load(spec: LoadSpec, progress_conn: Any = None) -> LoadReport:
    """Run the load in this process; progress goes to `progress_conn.send((t, done, errors))`."""

    def report(elapsed: float, done: int, errors: int) -> None:
        if progress_conn is not None:
            progress_conn.send(("progress", elapsed, done, errors))

    return run(_Generator(spec).run(report))


def load_process_main(spec: LoadSpec, conn: Any) -> None:
    """Entry point of a load process (multiprocessing): the report goes back over `conn`."""
    try:
        conn.send(("done", generate_load(spec, conn)))
    except BaseException as exc:  # report, do not hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
