"""The client wire protocol (docs/client-protocol.md): compact, little-endian, pipelined.

Every message is a frame: a u32 length, then that many bytes.

    request  = u32 length | u8 op | u32 request id | u64 client id | u64 seq | u64 ack
               | u16 key length | u32 value length | u32 expected length (NO_VALUE = absent)
               | key | value | expected
    response = u32 length | u32 request id | u8 status | body

A batch of write requests, exactly as the client framed them, is also what the leader proposes
as one Raft entry (after a one-byte tag): the frames are validated once, on arrival, and never
re-encoded.
"""

from __future__ import annotations

import enum
import struct
from typing import Optional, Tuple

__all__ = [
    "BATCH_TAG",
    "NO_VALUE",
    "Op",
    "ProtocolError",
    "REQUEST",
    "RESPONSE",
    "Status",
    "WRITE_OPS",
    "check_request",
    "encode_not_leader",
    "encode_request",
    "encode_response",
    "decode_not_leader",
]


class Op(enum.IntEnum):
    GET = 1
    PUT = 2
    DELETE = 3
    CAS = 4
    APPEND = 5
    STATUS = 6
    ADD_SERVER = 7
    REMOVE_SERVER = 8
    ADD_LEARNER = 9
    PROMOTE_LEARNER = 10
    TRANSFER_LEADER = 11  # key: the node id to hand leadership to (admin only)
    AUTH = 12  # key: a bearer token; the first request on a connection without a certificate


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1  # get: the key is absent
    CAS_FAILED = 2  # cas: the current value was not the expected one
    NOT_LEADER = 3  # retry at the leader named in the body (same client id and seq)
    ERROR = 4  # body: a UTF-8 message


WRITE_OPS = frozenset((Op.PUT, Op.DELETE, Op.CAS, Op.APPEND))
ADMIN_OPS = frozenset((Op.ADD_SERVER, Op.REMOVE_SERVER, Op.ADD_LEARNER, Op.PROMOTE_LEARNER, Op.TRANSFER_LEADER))
MAX_OP = max(Op)

REQUEST = struct.Struct("<IBIQQQHII")
"""The fixed head of a request frame, length prefix included (43 bytes)."""
RESPONSE = struct.Struct("<IIB")
"""The fixed head of a response frame, length prefix included (9 bytes)."""
NO_VALUE = 0xFFFFFFFF
"""`expected length` of a cas that expects the key to be absent (and of every other op)."""
MAX_KEY = 0xFFFF
BATCH_TAG = b"\x01"
"""First byte of a Raft entry holding a batch of write requests."""

_HEAD_BODY = REQUEST.size - 4  # fixed bytes counted by the length prefix
_NOT_LEADER = struct.Struct("<Q")


class ProtocolError(ValueError):
    """Bytes on the client port that are not a valid request: the connection is closed."""


def encode_request(
    op: int,
    request_id: int,
    key: bytes = b"",
    value: bytes = b"",
    expected: Optional[bytes] = None,
    client_id: int = 0,
    seq: int = 0,
    ack: int = 0,
) -> bytes:
    elen = NO_VALUE if expected is None else len(expected)
    length = _HEAD_BODY + len(key) + len(value) + (0 if expected is None else elen)
    head = REQUEST.pack(length, op, request_id, client_id, seq, ack, len(key), len(value), elen)
    if expected:
        return b"".join((head, key, value, expected))
    return b"".join((head, key, value))


def check_request(length: int, op: int, klen: int, vlen: int, elen: int, max_request: int) -> None:
    """Raise ProtocolError unless a request head is self-consistent and within limits."""
    if length > max_request:
        raise ProtocolError(f"request of {length} bytes exceeds the limit of {max_request}")
    if not 1 <= op <= MAX_OP:
        raise ProtocolError(f"unknown op {op}")
    expected = 0 if elen == NO_VALUE else elen
    if length != _HEAD_BODY + klen + vlen + expected:
        raise ProtocolError(
            f"length {length} does not match key {klen} + value {vlen} + expected {expected} bytes"
        )


def encode_response(request_id: int, status: int, body: bytes = b"") -> bytes:
    return RESPONSE.pack(5 + len(body), request_id, status) + body


def encode_not_leader(request_id: int, leader: Optional[int], address: str) -> bytes:
    return encode_response(request_id, Status.NOT_LEADER, _NOT_LEADER.pack(leader or 0) + address.encode())


def decode_not_leader(body: bytes) -> Tuple[Optional[int], str]:
    """(leader id or None, its client address or '')."""
    if len(body) < _NOT_LEADER.size:
        return None, ""
    (leader,) = _NOT_LEADER.unpack_from(body)
    return (leader or None), bytes(body[_NOT_LEADER.size :]).decode(errors="replace")
