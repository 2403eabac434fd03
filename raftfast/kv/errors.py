"""Errors of the key-value layer: the client's, and the snapshot reader's (here rather than in
`store`, which imports the kernels that raise it)."""

from __future__ import annotations

from ..errors import RaftError

__all__ = ["KVError", "KVTimeoutError", "SnapshotFormatError"]


class KVError(RaftError):
    """The cluster answered with an error (the request was not applied)."""


class KVTimeoutError(KVError, TimeoutError):
    """No answer in time. A write may or may not have been applied; retrying it through the
    same client is safe (same client id and seq)."""


class SnapshotFormatError(RaftError, ValueError):
    """Snapshot bytes that this version cannot read."""
