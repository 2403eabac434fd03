"""The load generator behind `raftfast bench`: many pipelined writers on lean protocols.

It runs in its own process (the cluster's nodes are other processes) on its own loop. Each
simulated client is one connection with its own client id that keeps `depth` puts in flight:
every reply is answered with a new request in the same write, so the request stream is as
batched as the cluster's replies. No futures: latency is stamped per request id.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..runtime.address import Address, parse_address
from ..runtime.loop import run
from ..security.credentials import ClientCredentials
from .protocol import NO_VALUE, REQUEST, RESPONSE, Op, Status, decode_not_leader, encode_request

__all__ = ["LoadSpec", "LoadReport", "generate_load"]

_HEAD_BODY = REQUEST.size - 4
_PREFIX = struct.Struct("<IBIQQQ")  # a request head up to the key length (REQUEST's first six)
_TAIL = struct.Struct("<HII")  # the rest of the head: key, value and expected lengths
assert _PREFIX.size + _TAIL.size == REQUEST.size
_NOT_LEADER = Status.NOT_LEADER
_OK = Status.OK
_PUT = Op.PUT


@dataclass
class LoadSpec:
    targets: List[str]  # client addresses; the first that is leader is used
    clients: int = 64
    depth: int = 32  # requests in flight per client
    value_size: int = 64
    keys: int = 100_000  # distinct keys written
    warmup: float = 1.0  # seconds before measuring
    duration: float = 10.0  # seconds measured
    seed: int = 0
    credentials: Optional[ClientCredentials] = None  # for a cluster with TLS on its client port


@dataclass
class LoadReport:
    """What one load process measured (latencies in ns, in completion order)."""

    completed: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: bytes = b""  # array('q') of ns
    per_second: List[int] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's CPU time in the measured window


class _Writer(asyncio.Protocol):
    """One client: a connection that keeps `depth` puts in flight."""

    def __init__(self, gen: "_Generator", client_id: int) -> None:
        self.gen = gen
        self.client_id = client_id
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = b""
        self.next_seq = 1
        self.inflight: Dict[int, int] = {}  # seq (= request id) -> send time, ns
        self.open_seqs: List[int] = []
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.redirect: Optional[Address] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, count: int, resend: bool = False) -> None:
        gen = self.gen
        now = time.perf_counter_ns()
        pack = _PREFIX.pack
        lengths = gen.lengths
        tails = gen.tails
        nkeys = len(tails)
        k = gen.key_cursor
        inflight = self.inflight
        cid = self.client_id
        out = []
        seqs = sorted(inflight) if resend else []
        if not resend:
            seq = self.next_seq
            seqs = range(seq, seq + count)
            self.next_seq = seq + count
        ack = min(inflight) if inflight else (seqs[0] if seqs else self.next_seq)
        for seq in seqs:
            out.append(pack(lengths[k], _PUT, seq & 0xFFFFFFFF, cid, seq, ack))
            out.append(tails[k])
            k = k + 1 if k + 1 < nkeys else 0
        inflight.update(dict.fromkeys(seqs, now))
        gen.key_cursor = k
        self.transport.write(b"".join(out))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        unpack = RESPONSE.unpack_from
        end = len(data)
        pos = 0
        now = time.perf_counter_ns()
        inflight = self.inflight
        gen = self.gen
        measuring = gen.measuring
        latencies = gen.latencies
        done = 0
        base = self.next_seq & ~0xFFFFFFFF
        while end - pos >= 9:
            length, rid, status = unpack(data, pos)
            frame_end = pos + 4 + length
            if frame_end > end:
                break
            seq = base | rid
            if seq >= self.next_seq:
                seq -= 1 << 32
            if status == _NOT_LEADER:
                _, address = decode_not_leader(data[pos + 9 : frame_end])
                self.redirect = parse_address(address) if address else None
                gen.errors += 1
                self.transport.close()  # type: ignore[union-attr]
                self.buffer = b""
                return
            sent = inflight.pop(seq, None)
            if sent is not None:
                done += 1
                if status != _OK:
                    gen.errors += 1
                elif measuring:
                    latencies.append(now - sent)
            pos = frame_end
        self.buffer = data[pos:] if pos < end else b""
        if done:
            if measuring:
                gen.completed += done
                gen.bucket_count += done
            if gen.running:
                self.send(done)


class _Generator:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.value = bytes(self.rng.getrandbits(8) for _ in range(spec.value_size))
        self.keys = [b"key-%08d" % i for i in range(spec.keys)]
        self.rng.shuffle(self.keys)  # written in this (random) order, round and round
        # each request is a prefix packed per request and this per-key tail
        vlen = len(self.value)
        self.tails = [_TAIL.pack(len(k), vlen, NO_VALUE) + k + self.value for k in self.keys]
        self.lengths = [_HEAD_BODY + len(k) + vlen for k in self.keys]
        self.key_cursor = 0
        self.latencies = array("q")
        self.completed = 0
        self.errors = 0
        self.bucket_count = 0
        self.per_second: List[int] = []
        self.measuring = False
        self.running = True
        credentials = spec.credentials
        self.ssl = credentials.ssl_context() if credentials is not None else None
        token = credentials.token() if credentials is not None else None
        self.auth = encode_request(Op.AUTH, 0, token) if token else b""  # request id 0: no write's

    async def run(self, report_progress) -> LoadReport:
        spec = self.spec
        leader = await _find_leader([parse_address(t) for t in spec.targets], spec.credentials)
        tasks = [asyncio.create_task(self._client(leader, i)) for i in range(spec.clients)]
        await asyncio.sleep(spec.warmup)
        self.measuring = True
        started = time.perf_counter()
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
        cpu = time.process_time() - cpu_started
        self.measuring = False
        self.running = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return LoadReport(self.completed, self.errors, elapsed, self.latencies.tobytes(), self.per_second, cpu)

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
            if writer is not None:  # carry the session over: same seqs, resent
                proto.next_seq, proto.inflight = writer.next_seq, writer.inflight
                proto.send(0, resend=True)
            else:
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
