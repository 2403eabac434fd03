"""Logs: the RaftLog protocol, MemoryLog, and the entry kernel both build on."""

from .memory import MemoryLog
from .protocol import RaftLog

__all__ = ["MemoryLog", "RaftLog"]
