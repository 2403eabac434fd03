"""The asyncio runtime that drives a RaftNode: ticks, TCP peer links, one batched turn per loop
iteration (see docs/runtime.md)."""

from .address import Address, parse_address, parse_peers
from .application import Application
from .loop import LOOP_NAME, new_event_loop, run
from .peers import PeerTransport
from .server import RaftServer
from .storage import open_log

__all__ = [
    "LOOP_NAME",
    "Address",
    "Application",
    "PeerTransport",
    "RaftServer",
    "new_event_loop",
    "open_log",
    "parse_address",
    "parse_peers",
    "run",
]
