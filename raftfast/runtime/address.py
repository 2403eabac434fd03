"""Network addresses as the CLI and the handshake spell them: `HOST:PORT`, and peer lists
`ID=HOST:PORT,ID=HOST:PORT`."""

from __future__ import annotations

from typing import Dict, NamedTuple

from ..types import NodeId

__all__ = ["Address", "CLIENT_PORT_OFFSET", "parse_address", "parse_peers"]

CLIENT_PORT_OFFSET = 1000
"""Unless told otherwise, a node serves clients on its peer port + this."""


class Address(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """`HOST:PORT` (IPv6 hosts in brackets); ValueError with the reason otherwise."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {text!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"address {text!r}: port {port} is outside 1..65535")
    return Address(host, port)


def parse_peers(text: str) -> Dict[NodeId, Address]:
    """`1=127.0.0.1:7001,2=127.0.0.1:7002` -> {1: Address(...), 2: ...}."""
    peers: Dict[NodeId, Address] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        id_text, sep, address = item.partition("=")
        if not sep:
            raise ValueError(f"peer {item!r} is not ID=HOST:PORT")
        try:
            node_id = int(id_text)
        except ValueError:
            raise ValueError(f"peer {item!r}: node id {id_text!r} is not a number") from None
        if node_id < 1:
            raise ValueError(f"peer {item!r}: node id must be >= 1")
        if node_id in peers:
            raise ValueError(f"peer {node_id} is listed twice")
        peers[node_id] = parse_address(address)
    if not peers:
        raise ValueError("the peer list is empty")
    return peers
