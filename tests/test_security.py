"""Security on real loopback sockets: mutual TLS between nodes, client identities and roles,
the limits on hostile input, and `raftfast certs` / `bench --tls`.

Every refusal must be logged with its reason and leave the cluster serving: each test ends by
writing and reading through an authorised client.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import struct
import time
from dataclasses import replace

import pytest

from raftfast import framing
from raftfast.cli import main
from raftfast.kv.bench import BenchConfig, run_bench
from raftfast.kv.client import KVClient
from raftfast.kv.errors import KVError, KVTimeoutError
from raftfast.kv.local import LocalKVCluster
from raftfast.kv.protocol import Op, encode_request
from raftfast.kv.server import ServerOptions
from raftfast.messages import AppendEntries, RequestVote
from raftfast.runtime.handshake import Hello
from raftfast.runtime.loop import run
from raftfast.security.auth import identity_from_certificate
from raftfast.security.certs import init_cert_dir, new_ca, node_certificate, user_certificate
from raftfast.security.credentials import ClientCredentials
from raftfast.security.layout import CertDir
from raftfast.security.tls import TLSConfig
from raftfast.types import LogEntry

pytestmark = pytest.mark.timeout(60)

FAST = ServerOptions(node_id=1, tick_interval=0.005, election_timeout=(10, 20))
HUGE_TERM = 10**6


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A cluster's certificate directory, plus rogue node certificates in `rogue/`."""
    path = tmp_path_factory.mktemp("certs")
    layout = init_cert_dir(str(path / "cluster"), 3)
    rogue = path / "rogue"
    rogue.mkdir()
    ca = _load_ca(layout)
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    node_certificate(new_ca("another CA"), 2).write(str(rogue / "other-ca.pem"), str(rogue / "other-ca-key.pem"))
    node_certificate(ca, 2, days=1, not_before=past).write(str(rogue / "expired.pem"), str(rogue / "expired-key.pem"))
    node_certificate(ca, 5).write(str(rogue / "node-5.pem"), str(rogue / "node-5-key.pem"))
    return layout, rogue


def _load_ca(layout: CertDir):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from raftfast.security.certs import Issued

    with open(layout.ca, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(layout.ca_key, "rb") as f:
        key = load_pem_private_key(f.read(), None)
    return Issued(cert, key)  # type: ignore[arg-type]


def _secure(layout: CertDir, **changes) -> ServerOptions:
    return replace(FAST, tls=layout.tls_config(), token_file=layout.token("client"),
                   admin_token_file=layout.token("admin"), **changes)


def _client(cluster: LocalKVCluster, credentials: ClientCredentials = None, **kwargs) -> KVClient:
    options = credentials.client_options() if credentials is not None else {}
    return KVClient([cluster.client_addresses[i] for i in sorted(cluster.client_addresses)], **options, **kwargs)


async def _still_serving(cluster: LocalKVCluster, credentials: ClientCredentials = None, key: bytes = b"ok") -> None:
    async with _client(cluster, credentials) as kv:
        await kv.put(key, b"1")
        assert await kv.get(key) == b"1"


async def _logged(caplog, text: str, timeout: float = 3.0) -> str:
    """The first log message containing `text`, waiting for it to appear."""
    deadline = time.monotonic() + timeout
    while True:
        for record in caplog.records:
            if text in record.getMessage():
                return record.getMessage()
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {text!r} in {[r.getMessage() for r in caplog.records]}")
        await asyncio.sleep(0.02)


def _frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


async def _closed_by_peer(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    except asyncio.TimeoutError:
        return False


# -- certificates --------------------------------------------------------------------------------


def test_certs_init_names_each_node_and_gives_the_admin_its_role(certs, tmp_path, capsys):
    layout, _ = certs
    assert layout.node_ids() == [1, 2, 3]
    context = TLSConfig(*layout.node(2), layout.ca).peer_server_context  # loads and matches
    assert context.verify_mode == ssl.CERT_REQUIRED
    from cryptography import x509

    with open(layout.node(2)[0], "rb") as f:
        sans = x509.load_pem_x509_certificate(f.read()).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName)[:2] == ["node-2", "localhost"]
    assert "127.0.0.1" in map(str, sans.value.get_values_for_type(x509.IPAddress))
    ca = _load_ca(layout)
    admin = {"subject": ((("commonName", "admin"),), (("organizationalUnitName", "admin"),)),
             "subjectAltName": (("URI", "role:admin"),)}
    assert identity_from_certificate(admin).is_admin
    assert not identity_from_certificate({"subject": ((("commonName", "client"),),)}).is_admin
    assert user_certificate(ca, "ops", admin=True).cert.subject.rfc4514_string() == "OU=admin,CN=ops"
    # the command, and its refusal to replace a CA without --force
    target = str(tmp_path / "c")
    assert main(["certs", "init", target, "--nodes", "2", "--host", "10.0.0.7"]) == 0
    assert CertDir(target).node_ids() == [1, 2]
    assert main(["certs", "init", target]) == 1
    assert "already holds a CA" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--id", "1", "--peers", "1=10.1.2.3:7001", "--data-dir", "d"], "is not a loopback address"),
        (["serve", "--id", "1", "--peers", "1=127.0.0.1:7001", "--data-dir", "d", "--tls-cert", "c.pem"],
         "go together"),
        (["serve", "--id", "1", "--peers", "1=127.0.0.1:7001", "--data-dir", "d", "--token-file", "t"],
         "need TLS"),
        (["kv", "get", "k", "--token-file", "t"], "need the cluster CA"),
    ],
)
def test_insecure_or_incomplete_tls_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- the peer port -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rogue, reason",
    [
        ("other-ca", "certificate not signed by the cluster CA"),
        ("plaintext", "plaintext is refused"),
        ("node-5", "claims to be node {member}, but its certificate names node-5"),
        ("expired", "certificate has expired"),
    ],
)
def test_a_rogue_peer_is_refused_and_changes_nothing(certs, rogue, reason, caplog):
    """Each rogue claims to be member 2 and asks for votes in a huge term: if it got through,
    the leader would step down."""
    caplog.set_level(logging.INFO)
    layout, rogue_dir = certs

    async def main():
        async with LocalKVCluster(3, options=_secure(layout)) as cluster:
            leader = await cluster.wait_leader()
            term = leader.raft.node.term
            member = next(i for i in cluster.ids if i != leader.id)
            address = leader.raft.peer_address
            payload = _frame(Hello("raftfast", member, leader.id).encode()) + framing.encode_frame(
                RequestVote(HUGE_TERM, member, 10**9, HUGE_TERM))
            context = None
            if rogue != "plaintext":
                context = TLSConfig(str(rogue_dir / f"{rogue}.pem"), str(rogue_dir / f"{rogue}-key.pem"),
                                    layout.ca).peer_client_context
            try:  # with TLS 1.3 the server judges the client's certificate after the client is done
                reader, writer = await asyncio.open_connection(address.host, address.port, ssl=context)
                writer.write(payload)
                assert await _closed_by_peer(reader)
                writer.close()
            except (ssl.SSLError, ConnectionError):
                pass  # refused during the handshake
            message = await _logged(caplog, reason.format(member=member))
            assert "refused connection" in message or "closing peer connection" in message
            assert leader.raft.node.term == term and cluster.leader() is leader
            await _still_serving(cluster, ClientCredentials.from_cert_dir(layout.path))

    run(main())


def test_peer_limits_each_close_a_connection_with_a_reason(caplog):
    """Entries per AppendEntries, connections per peer, and the hello deadline (the frame size
    limit is test_runtime's)."""
    caplog.set_level(logging.WARNING, "raftfast.runtime.peers")

    async def main():
        async with LocalKVCluster(3, options=replace(FAST, max_entries=8, raft={"max_batch": 8})) as cluster:
            leader = await cluster.wait_leader()
            transport = leader.raft.transport
            transport.max_connections_per_peer = 2
            transport.hello_timeout = 0.3
            member = next(i for i in cluster.ids if i != leader.id)
            address = leader.raft.peer_address
            hello = _frame(Hello("raftfast", member, leader.id).encode())
            entries = [LogEntry(1, i + 1, command=b"x") for i in range(10)]
            batch = framing.encode_frame(AppendEntries(1, member, 0, 0, entries, 0))
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(hello + batch)
            assert await _closed_by_peer(reader)
            writer.close()
            await _logged(caplog, "an AppendEntries with 10 entries exceeds the limit of 8")

            streams = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection(address.host, address.port)
                writer.write(hello)
                streams.append((reader, writer))
                await asyncio.sleep(0.05)
            assert await _closed_by_peer(streams[0][0])  # the oldest goes
            await _logged(caplog, "more than 2 connections from this peer: closing the oldest")

            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(hello[:5])  # a hello that never completes
            assert await _closed_by_peer(reader)
            writer.close()
            await _logged(caplog, "no complete hello within 0.3 s")
            for _, w in streams:
                w.close()
            await _still_serving(cluster)

    run(main())


# -- the client port -----------------------------------------------------------------------------


def test_clients_need_an_identity_and_admin_requests_the_admin_role(certs, caplog):
    caplog.set_level(logging.WARNING)
    layout, _ = certs
    client_cert = ClientCredentials.from_cert_dir(layout.path)
    admin_cert = ClientCredentials.from_cert_dir(layout.path, admin=True)
    ca_only = ClientCredentials(layout.ca)
    client_token = ClientCredentials(layout.ca, token_file=layout.token("client"))
    admin_token = ClientCredentials(layout.ca, token_file=layout.token("admin"))

    async def main():
        async with LocalKVCluster(3, options=_secure(layout)) as cluster:
            leader = await cluster.wait_leader()
            members = list(leader.raft.node.members)
            async with _client(cluster, ca_only, timeout=2.0) as kv:
                with pytest.raises(KVError, match="unauthenticated"):
                    await kv.put(b"secret", b"x")
                with pytest.raises(KVError, match="unauthenticated"):
                    await kv.get(b"secret")
            await _logged(caplog, "PUT without a client certificate or an AUTH token")
            async with _client(cluster, timeout=2.0, ssl=ca_only.ssl_context(), token=b"not-the-token-at-all") as kv:
                with pytest.raises(KVError, match="unknown token"):
                    await kv.get(b"secret")
            await _logged(caplog, "AUTH with an unknown token")
            async with _client(cluster, timeout=0.5) as kv:  # plaintext to a TLS port
                with pytest.raises(KVTimeoutError):
                    await kv.get(b"secret")
            await _logged(caplog, "plaintext is refused")

            for credentials in (client_cert, client_token):
                async with _client(cluster, credentials) as kv:
                    await kv.put(b"k", b"v")
                    assert await kv.get(b"k") == b"v"
                    assert await kv.get(b"secret") is None  # the refused write had no effect
                    with pytest.raises(KVError, match="forbidden: ADD_SERVER needs the admin role"):
                        await kv.add_server(9)
                    with pytest.raises(KVError, match="forbidden: TRANSFER_LEADER needs the admin role"):
                        await kv.transfer_leadership(members[-1])
            await _logged(caplog, "ADD_SERVER by 'client' (client, by certificate): needs the admin role")
            await _logged(caplog, "TRANSFER_LEADER by 'client token' (client, by token): needs the admin role")
            assert list(leader.raft.node.members) == members and cluster.leader() is leader

            target = next(i for i in cluster.ids if i != leader.id)
            async with _client(cluster, admin_token) as kv:
                await kv.transfer_leadership(target)
            assert (await cluster.wait_leader()).id == target
            async with _client(cluster, admin_cert) as kv:
                await kv.transfer_leadership(leader.id)
                await kv.add_learner(9)  # the admin may change membership (a learner: no quorum change)
            await _still_serving(cluster, client_cert)

    run(main())


def test_pending_requests_are_bounded_and_slow_requests_cut_off(caplog):
    caplog.set_level(logging.INFO, "raftfast.kv.limits")
    options = replace(FAST, election_timeout=(100, 150), max_pending=8, request_timeout=0.3)

    async def main():
        async with LocalKVCluster(3, options=options) as cluster:
            leader = await cluster.wait_leader()
            # the leader cannot reach a quorum for a moment: its writes pile up
            transport = leader.raft.transport
            transport.drop_to = transport.drop_from = set(cluster.ids) - {leader.id}
            async with cluster.client() as kv:
                writes = asyncio.gather(*(kv.put(b"k%d" % i, b"v") for i in range(32)))
                await _logged(caplog, "client requests pending, the limit is 8: not reading from clients")
                transport.drop_to = transport.drop_from = set()
                await writes
                await _logged(caplog, "reading from clients again")

                address = leader.client_address
                reader, writer = await asyncio.open_connection(address.host, address.port)
                request = encode_request(Op.PUT, 1, b"slow", b"loris", None, 77, 1, 1)
                started = time.monotonic()
                for byte in request[:-1]:  # one byte at a time, never the last
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.05)
                    if writer.transport.is_closing() or reader.at_eof():
                        break
                assert await _closed_by_peer(reader)
                assert time.monotonic() - started < 2.0
                await _logged(caplog, "a request still incomplete after 0.3 s")
                writer.close()
                assert await kv.get(b"slow") is None
            await _still_serving(cluster)

    run(main())


# -- the load test with TLS ----------------------------------------------------------------------


def test_bench_runs_with_tls(certs):
    layout, _ = certs
    result = run_bench(BenchConfig(nodes=3, clients=4, depth=4, duration=1.0, warmup=0.5, tls_dir=layout.path))
    assert result.writes > 0 and result.errors == 0
