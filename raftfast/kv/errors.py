"""Errors the key-value client raises."""

from __future__ import annotations

from ..errors import RaftError

__all__ = ["KVError", "KVTimeoutError"]


class KVError(RaftError):
    """The cluster answered with an error (the request was not applied)."""


class KVTimeoutError(KVError, TimeoutError):
    """No answer in time. A write may or may not have been applied; retrying it through the
    same client is safe (same client id and seq)."""
