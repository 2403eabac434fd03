"""The hello frame that opens every peer connection.

The dialing node sends it first, as an ordinary length-prefixed frame:

    magic "RFHS" | u8 version | u64 sender | u64 target
    | u16 len + cluster id | u16 len + sender's peer address | u16 len + sender's client address

The acceptor checks the cluster id and that it is the target, then learns the sender's
addresses (so a node that joins later can be dialed back and named in client redirects).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..types import NodeId

__all__ = ["HandshakeError", "Hello"]

MAGIC = b"RFHS"
VERSION = 1
_HEAD = struct.Struct("<4sBQQ")
_LEN = struct.Struct("<H")
_MAX_TEXT = 1024


class HandshakeError(ValueError):
    """A hello that is malformed or meant for another cluster or node."""


@dataclass(frozen=True, slots=True)
class Hello:
    cluster_id: str
    sender: NodeId
    target: NodeId
    peer_address: str = ""
    client_address: str = ""

    def encode(self) -> bytes:
        parts = [_HEAD.pack(MAGIC, VERSION, self.sender, self.target)]
        for text in (self.cluster_id, self.peer_address, self.client_address):
            raw = text.encode()
            if len(raw) > _MAX_TEXT:
                raise ValueError(f"hello: {text[:40]!r}... is longer than {_MAX_TEXT} bytes")
            parts.append(_LEN.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> "Hello":
        if len(payload) < _HEAD.size:
            raise HandshakeError(f"hello of {len(payload)} bytes is truncated")
        magic, version, sender, target = _HEAD.unpack_from(payload)
        if magic != MAGIC:
            raise HandshakeError(f"not a raftfast peer hello (starts with {bytes(payload[:4])!r})")
        if version != VERSION:
            raise HandshakeError(f"hello version {version} is not supported (want {VERSION})")
        texts = []
        offset = _HEAD.size
        for _ in range(3):
            if offset + _LEN.size > len(payload):
                raise HandshakeError("hello is truncated")
            (size,) = _LEN.unpack_from(payload, offset)
            offset += _LEN.size
            if offset + size > len(payload):
                raise HandshakeError("hello is truncated")
            try:
                texts.append(bytes(payload[offset : offset + size]).decode())
            except UnicodeDecodeError:
                raise HandshakeError("hello text is not UTF-8") from None
            offset += size
        if offset != len(payload):
            raise HandshakeError(f"hello has {len(payload) - offset} trailing bytes")
        if sender < 1 or target < 1:
            raise HandshakeError(f"hello names node ids {sender} -> {target}; ids start at 1")
        return cls(texts[0], sender, target, texts[1], texts[2])

    def check(self, cluster_id: str, node_id: NodeId) -> None:
        """Raise HandshakeError unless this hello is for `node_id` in `cluster_id`."""
        if self.cluster_id != cluster_id:
            raise HandshakeError(
                f"node {self.sender} belongs to cluster {self.cluster_id!r}, not {cluster_id!r}"
            )
        if self.target != node_id:
            raise HandshakeError(f"node {self.sender} dialed node {self.target}, but this is node {node_id}")
        if self.sender == node_id:
            raise HandshakeError(f"node {node_id} dialed itself")
