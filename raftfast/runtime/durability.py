"""Pipelined durability: the fdatasync of one turn runs in a thread while the loop goes on.

The node calls `log.sync()` at the end of a step that wrote the log, and expects everything
written to be durable when it returns. The runtime hands the node a `DeferredSyncLog`
instead: its `sync()` only writes the buffered records to the file (`WalLog.flush()`) and
marks the step dirty. The runtime then asks the `SyncWorker` for an fsync (`request()`, a
ticket) and holds that step's actions; the worker runs `WalLog.sync_flushed()` in its own
thread (os.fdatasync releases the GIL) and reports the ticket back to the loop, which then
carries out the held actions, strictly in step order. So the contract is unchanged (no
action is carried out before everything it depends on is durable), while the loop keeps
reading sockets, parsing requests, applying and answering during the fsync.

One fsync covers every request made before it started (group commit): requests that arrive
while one runs are served together by the next.

The log also tells the node how far it is durable (`durable_index()`): the runtime records
the last index each ticket covers (`requested`) and moves the mark when that ticket's fsync
returns (`synced`). With it a leader sends its AppendEntries while its own fsync runs and
counts itself toward a commit only once that fsync returned (thesis §10.2.1).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, Callable, Deque, List, Optional

__all__ = ["DeferredSyncLog", "SyncWorker", "supports_deferred_sync"]

_FAST = ("last_index", "last_term", "term_at", "entry", "entries", "batch", "slices",
         "append", "append_commands", "hard_state", "set_hard_state", "snapshot_index", "snapshot")


def supports_deferred_sync(log: Any) -> bool:
    """A log that can split its sync in two (WalLog: `flush` + `sync_flushed`)."""
    return callable(getattr(log, "flush", None)) and callable(getattr(log, "sync_flushed", None))


class DeferredSyncLog:
    """The node's view of a WalLog whose fsyncs the runtime runs elsewhere.

    Every method is the wrapped log's, except `sync()`: it writes the buffered records to the
    file and sets `dirty`; whoever clears `dirty` owes an fsync (`SyncWorker.request()`)
    before carrying out what the node returned.
    """

    def __init__(self, log: Any) -> None:
        self.wrapped = log
        self.dirty = False
        self._durable = log.last_index()  # what recovery found is on disk
        self._pending: Deque[List[int]] = deque()  # [ticket, last index it covers], in order
        for name in _FAST:  # bound methods as attributes: no wrapper call on the hot path
            method = getattr(log, name, None)
            if method is not None:
                setattr(self, name, method)

    def sync(self) -> None:
        self.wrapped.flush()
        self.dirty = True

    def durable_index(self) -> int:
        """The highest index an fsync that returned covered (as the log holds it now)."""
        return self._durable

    def requested(self, ticket: int) -> None:
        """`ticket`'s fsync will cover everything written so far."""
        self._pending.append([ticket, self.wrapped.last_index()])

    def synced(self, ticket: int) -> None:
        """Every fsync up to `ticket` returned."""
        pending = self._pending
        while pending and pending[0][0] <= ticket:
            self._durable = pending.popleft()[1]

    def truncate(self, from_index: int) -> None:
        # what was durable above the cut is gone, and an fsync under way covers less
        self.wrapped.truncate(from_index)
        self._lower(from_index - 1)

    def apply_snapshot(self, snapshot: Any) -> None:
        # the suffix above the snapshot may be gone: claim only the snapshot's own index,
        # and that only once an fsync covers it
        self.wrapped.apply_snapshot(snapshot)
        self._lower(min(self._durable, snapshot.index))

    def _lower(self, index: int) -> None:
        self._durable = min(self._durable, index)
        for record in self._pending:
            record[1] = min(record[1], index)

    def __getattr__(self, name: str) -> Any:  # everything else: apply_snapshot, close, ...
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"DeferredSyncLog({self.wrapped!r})"


class SyncWorker:
    """A thread that runs `log.sync_flushed()` on request and reports to the loop.

    `request()` (loop thread) returns a ticket; once an fsync that started after the request
    returns, `on_synced(ticket)` is called in the loop with the highest ticket it covered.
    A failed fsync calls `on_failed(exc)` in the loop, and the worker stops for good: a failed
    fsync is never retried (the log itself refuses every later call, too).
    """

    def __init__(self, log: Any, loop: asyncio.AbstractEventLoop,
                 on_synced: Callable[[int], None], on_failed: Callable[[BaseException], None],
                 name: str = "raftfast-fsync") -> None:
        self._log = log
        self._loop = loop
        self._on_synced = on_synced
        self._on_failed = on_failed
        self._cond = threading.Condition(threading.Lock())
        self._requested = 0
        self._stopping = False
        self.synced = 0  # the highest ticket an fsync covered (written by the worker)
        self.failure: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def requested(self) -> int:
        return self._requested

    def request(self) -> int:
        """Ask for an fsync of everything flushed so far; returns its ticket."""
        with self._cond:
            self._requested += 1
            ticket = self._requested
            self._cond.notify()
        return ticket

    def stop(self, timeout: Optional[float] = None) -> None:
        """Finish the fsync under way (if any), then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        cond = self._cond
        log = self._log
        while True:
            with cond:
                while self._requested == self.synced and not self._stopping:
                    cond.wait()
                if self._stopping:
                    return
                target = self._requested
            try:
                log.sync_flushed()
            except BaseException as exc:  # fatal: report and stop, never retry
                self.failure = exc
                self._post(self._on_failed, exc)
                return
            self.synced = target
            self._post(self._on_synced, target)

    def _post(self, callback: Callable[[Any], None], arg: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
