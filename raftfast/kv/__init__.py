"""A replicated key-value service on raftfast: the state machine (`KVStore`), the client port
(`KVService`), a whole member (`KVServer`) and the asyncio client library (`KVClient`)."""

from .client import KVClient
from .errors import KVError, KVTimeoutError
from .server import KVServer, ServerOptions
from .service import KVService
from .store import KVStore

__all__ = ["KVClient", "KVError", "KVServer", "KVService", "KVStore", "KVTimeoutError", "ServerOptions"]
