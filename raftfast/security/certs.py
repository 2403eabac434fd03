"""Creating a cluster's certificates with the `cryptography` package (`raftfast certs init`).

Every key is ECDSA P-256: small, and the cheapest handshake Python's ssl offers. Node
certificates carry their identity as a DNS SAN `node-N` (what the peer port checks against the
id a peer claims), plus `localhost`, `127.0.0.1`, `::1` and any `--host` given, so clients can
verify the node they dial by address. The admin certificate carries its role twice: as the
organizational unit `admin` and as the URI SAN `role:admin`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .auth import ADMIN_ROLE, CLIENT_ROLE, ROLE_URI_PREFIX
from .layout import CertDir
from .tls import node_name

__all__ = ["Issued", "init_cert_dir", "issue", "new_ca", "node_certificate", "user_certificate"]

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, cert_path: str, key_path: str) -> None:
        with open(cert_path, "wb") as f:
            f.write(self.cert_pem())
        _write_secret(key_path, self.key_pem())


def _write_secret(path: str, data: bytes) -> None:
    # readable by its owner only, from the moment it exists
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _window(days: float, not_before: Optional[datetime.datetime]) -> tuple:
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    return start, start + datetime.timedelta(days=days)


def new_ca(common_name: str = "raftfast cluster CA", *, days: float = 3650,
           not_before: Optional[datetime.datetime] = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _window(days, not_before)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _general_names(hosts: Iterable[str], uris: Iterable[str]) -> list:
    names: list = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names.extend(x509.UniformResourceIdentifier(uri) for uri in uris)
    return names


def issue(ca: Issued, common_name: str, *, hosts: Sequence[str] = (), uris: Sequence[str] = (),
          org_unit: Optional[str] = None, server: bool = False, days: float = 365,
          not_before: Optional[datetime.datetime] = None) -> Issued:
    """A certificate for `common_name` signed by `ca`. `hosts` become DNS or IP SANs, `uris`
    URI SANs; `server` allows it to serve TLS as well as to be a TLS client."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org_unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, org_unit))
    start, end = _window(days, not_before)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    names = _general_names(hosts, uris)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def node_certificate(ca: Issued, node_id: int, *, hosts: Sequence[str] = (), days: float = 365,
                     not_before: Optional[datetime.datetime] = None) -> Issued:
    """Node `node_id`'s certificate: SAN `node-N` first, then the local names and `hosts`."""
    name = node_name(node_id)
    return issue(ca, name, hosts=[name, *_LOCAL_HOSTS, *hosts], server=True, days=days, not_before=not_before)


def user_certificate(ca: Issued, name: str, *, admin: bool = False, days: float = 365,
                     not_before: Optional[datetime.datetime] = None) -> Issued:
    """A client certificate; `admin=True` adds the admin role (OU and URI SAN)."""
    return issue(ca, name, uris=[ROLE_URI_PREFIX + ADMIN_ROLE] if admin else [],
                 org_unit=ADMIN_ROLE if admin else None, days=days, not_before=not_before)


def init_cert_dir(path: str, nodes: int, *, hosts: Sequence[str] = (), days: float = 365,
                  force: bool = False) -> CertDir:
    """Create a CA, certificates for nodes 1..`nodes`, a client and an admin, and a bearer
    token for each of those two roles, in `path`.

    Refuses (FileExistsError) to replace an existing CA unless `force`: certificates already
    handed out would stop being trusted. With `force`, node certificates beyond `nodes` left
    from before are removed, since their CA is gone."""
    layout = CertDir(path)
    if layout.exists() and not force:
        raise FileExistsError(f"{path} already holds a CA; pass --force to replace every certificate in it")
    if nodes < 1:
        raise ValueError(f"need at least one node, got {nodes}")
    os.makedirs(path, exist_ok=True)
    for stale in layout.node_ids():
        if stale > nodes:
            for file in layout.node(stale):
                if os.path.exists(file):
                    os.remove(file)
    ca = new_ca(days=max(days, 3650))
    ca.write(layout.ca, layout.ca_key)
    for node_id in range(1, nodes + 1):
        node_certificate(ca, node_id, hosts=hosts, days=days).write(*layout.node(node_id))
    user_certificate(ca, CLIENT_ROLE, days=days).write(*layout.user(CLIENT_ROLE))
    user_certificate(ca, ADMIN_ROLE, admin=True, days=days).write(*layout.user(ADMIN_ROLE))
    for role in (CLIENT_ROLE, ADMIN_ROLE):
        _write_secret(layout.token(role), secrets.token_urlsafe(32).encode() + b"\n")
    return layout
