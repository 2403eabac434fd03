"""Who a client is, and what its role lets it do on the client port.

A client proves its identity with a certificate signed by the cluster CA (checked during the
TLS handshake) or, over TLS, with a bearer token sent in an AUTH request. Roles:

- `client`: reads, writes and STATUS. Any verified certificate, or the client token.
- `admin`: also membership changes and leadership transfer. A certificate whose
  organizational unit is `admin` or that carries the URI SAN `role:admin`, or the admin token.

Tokens are compared in constant time; a token file holds one token (surrounding whitespace is
ignored) of at least 16 characters.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Dict, Optional

__all__ = ["ADMIN_ROLE", "CLIENT_ROLE", "ClientAuth", "Identity", "ROLE_URI_PREFIX", "read_token"]

ADMIN_ROLE = "admin"
CLIENT_ROLE = "client"
ROLE_URI_PREFIX = "role:"
MIN_TOKEN = 16


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    source: str  # "certificate" or "token"

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN_ROLE

    def __str__(self) -> str:
        return f"{self.name!r} ({self.role}, by {self.source})"


def _subject_field(peercert: Dict[str, Any], field: str) -> Optional[str]:
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == field:
                return value
    return None


def identity_from_certificate(peercert: Optional[Dict[str, Any]]) -> Optional[Identity]:
    """The identity of a verified client certificate (None when none was presented)."""
    if not peercert:
        return None
    name = _subject_field(peercert, "commonName") or "?"
    uris = {value for kind, value in peercert.get("subjectAltName", ()) if kind == "URI"}
    admin = _subject_field(peercert, "organizationalUnitName") == ADMIN_ROLE or ROLE_URI_PREFIX + ADMIN_ROLE in uris
    return Identity(name, ADMIN_ROLE if admin else CLIENT_ROLE, "certificate")


def read_token(path: str) -> bytes:
    """The token in `path`; ValueError if it is too short to be a secret."""
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the token file: {exc}") from None
    if len(token) < MIN_TOKEN:
        raise ValueError(f"the token in {path} is shorter than {MIN_TOKEN} characters")
    return token


class ClientAuth:
    """The client port's policy: certificates always; tokens when configured."""

    def __init__(self, client_token: Optional[bytes] = None, admin_token: Optional[bytes] = None) -> None:
        if client_token is not None and client_token == admin_token:
            raise ValueError("the client and admin tokens must differ")
        self._tokens = [(t, r) for t, r in ((client_token, CLIENT_ROLE), (admin_token, ADMIN_ROLE)) if t]

    @classmethod
    def from_files(cls, token_file: Optional[str] = None, admin_token_file: Optional[str] = None) -> "ClientAuth":
        return cls(read_token(token_file) if token_file else None,
                   read_token(admin_token_file) if admin_token_file else None)

    @property
    def accepts_tokens(self) -> bool:
        return bool(self._tokens)

    def from_certificate(self, peercert: Optional[Dict[str, Any]]) -> Optional[Identity]:
        return identity_from_certificate(peercert)

    def from_token(self, token: bytes) -> Optional[Identity]:
        """The identity `token` grants, or None. Every configured token is compared, so the
        time taken does not say which one came close."""
        found = None
        for expected, role in self._tokens:
            if hmac.compare_digest(token, expected):
                found = Identity(f"{role} token", role, "token")
        return found
