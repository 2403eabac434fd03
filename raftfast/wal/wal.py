"""WalLog: a durable RaftLog kept in a directory of segment files and snapshot files.

Every change is a record appended to the active segment: in a user-space buffer first, then
written with one pwrite and made durable with one fdatasync by `sync()` (group commit). Reads
never touch the disk: the entries live in an in-memory EntryLog, rebuilt by recovery.

A segment header describes the state the records before it built: it is made from the
last index and snapshot as logged, not from memory, because an append updates the entry log
(which validates it, with MemoryLog's errors) before its record is written.
"""

from __future__ import annotations

import os
import threading
from array import array
from itertools import groupby
from typing import Callable, List, NoReturn, Optional, Sequence, Tuple

import crc32c

from ..errors import StorageError
from ..log._entries import EntryBatch, EntryLog
from ..types import HardState, LogEntry, Snapshot
from . import format as fmt
from .fileio import FileIO
from .recovery import SegmentInfo, load
from .segment import TMP_SUFFIX, install_segment, prepare_segment, recycled_name, reuse_segment, segment_name, write_zeros
from .snapshots import parse_snapshot_name, write_snapshot

DEFAULT_SEGMENT_BYTES = 64 << 20
MIN_SEGMENT_BYTES = 4096
FIRST_SEGMENT_BYTES = 1 << 20
"""A new log's first segment; each next one doubles, up to `segment_bytes`, so a small log
never zero-fills 64 MiB and a big one soon has full-size segments."""
LOCK_NAME = "LOCK"
_ON_THE_SPOT_BYTES = 4 << 20
"""The most a rotation zero-fills in the writer's thread (when no spare holds the record)."""

_FLUSH_BYTES = 1 << 20
"""Unsynced records beyond this are written out early, to bound the buffer."""
_BYTES_ONLY = {bytes}
_READS = ("last_index", "last_term", "term_at", "entry", "entries", "batch", "slices")


class WalLog:
    """A crash-safe RaftLog in directory `path`; make one with `WalLog.open(path)`.

    `sync()` is the durability barrier: one fdatasync covers every write since the last one.
    Any I/O error is fail-stop: it raises StorageError, and so does every later call, because
    after a failed write or fsync nobody knows what reached the disk.
    """

    __slots__ = (
        *_READS,
        "_dir", "_io", "_lock_fd", "_segment_bytes", "_entries", "_hard", "_snapshot", "_segments",
        "_high_water", "_logged_last", "_logged_snap", "_seq", "_fd", "_size", "_planned", "_pos", "_synced", "_buf", "_failure",
        "_sync_lock", "_spare", "_snap_write", "_deleter", "_seed", "_magic", "_recycled",
    )

    # The reads are the entry log's own bound methods: no wrapper call on the hot path.
    last_index: Callable[[], int]
    last_term: Callable[[], int]
    term_at: Callable[[int], Optional[int]]
    entry: Callable[[int], LogEntry]
    entries: Callable[[int, int], List[LogEntry]]
    batch: Callable[[int, int, int], EntryBatch]
    slices: Callable[[int, int], Tuple[List[int], bytes, List[bytes]]]

    @classmethod
    def open(cls, path: "str | os.PathLike[str]", *, segment_bytes: int = DEFAULT_SEGMENT_BYTES, io: Optional[FileIO] = None) -> "WalLog":
        """Open (creating if needed) the WAL in directory `path` and recover its state.

        `segment_bytes` is the size segment files grow to. Raises StorageError if the directory
        is corrupt, unreadable, or already open (by this process or another).
        """
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be at least {MIN_SEGMENT_BYTES}, got {segment_bytes}")
        io = FileIO() if io is None else io
        directory = os.path.abspath(os.fspath(path))
        try:
            io.makedirs(directory)
            lock_fd = io.lock(os.path.join(directory, LOCK_NAME))
        except BlockingIOError:
            raise StorageError(directory, "already open: another WalLog holds its lock") from None
        except OSError as e:
            raise StorageError(directory, f"cannot open: {e}") from e
        try:
            return cls(directory, io, lock_fd, segment_bytes)
        except BaseException:
            io.close(lock_fd)
            raise

    def __init__(self, directory: str, io: FileIO, lock_fd: int, segment_bytes: int) -> None:
        """Recover from `directory`, whose lock `lock_fd` is held. Use `WalLog.open`."""
        self._dir = directory
        self._io = io
        self._lock_fd = lock_fd
        self._segment_bytes = segment_bytes
        self._buf = bytearray()
        self._failure: Optional[StorageError] = None
        # Held by every fdatasync and by whatever changes the active segment, so that
        # `sync_flushed` may run in another thread while this one keeps writing.
        self._sync_lock = threading.Lock()
        self._spare: Optional[_Spare] = None
        self._snap_write: Optional[_SnapshotWrite] = None
        self._deleter: Optional[_Background] = None
        # (file name, size) of the covered segment waiting to be reused as a spare, if any
        self._recycled: Optional[Tuple[str, int]] = None
        rec = load(directory, io)
        self._entries = rec.entries
        self._hard = rec.hard_state
        self._snapshot = rec.snapshot
        self._high_water = rec.high_water
        self._logged_last = rec.logged_last
        self._logged_snap = rec.logged_snap
        try:
            for name in rec.obsolete:
                self._unlink(name)
            if not rec.segments:
                preamble = self._preamble(1, 0)
                size = min(segment_bytes, FIRST_SEGMENT_BYTES)
                prepare_segment(io, directory, 1, size)
                install_segment(io, directory, 1, preamble)
                rec.segments, rec.end, rec.size = [SegmentInfo(1, segment_name(1), 0, size)], len(preamble), size
                rec.seed = fmt.segment_seed(1)
            active = rec.segments[-1]
            self._fd = io.open_rw(os.path.join(directory, active.name))
        except OSError as e:
            raise StorageError(e.filename or directory, f"recovery failed: {e}") from e
        self._segments = rec.segments
        self._seq = active.seq
        self._size = self._planned = rec.size
        self._pos = self._synced = rec.end
        self._seed = rec.seed  # a version 1 segment, while it is the active one, is written as such
        self._magic = fmt.segment_magic(rec.seed)
        for name in _READS:
            setattr(self, name, getattr(self._entries, name))
        try:
            if rec.torn is not None:
                write_zeros(io, self._fd, *rec.torn)
            # What recovery read may have reached only the page cache before a crash: make it
            # durable, so later records may vouch for it.
            io.fdatasync(self._fd)
            if rec.pending_snapshot is not None:
                self._put_snapshot(*rec.pending_snapshot)
                self._sync_segment()
            self._compact()
        except OSError as e:
            self._drop_spare()
            io.close(self._fd)
            raise StorageError(e.filename or directory, f"recovery failed: {e}") from e

    # -- the RaftLog protocol ------------------------------------------------------------------

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Append `entries` (the first at `last_index()+1`) as one record; ValueError, with
        nothing written, if they do not follow the log."""
        self._check()
        if self._snap_write is not None:
            self._advance_snapshot()
        log = self._entries
        first = log.last_index() + 1
        if type(entries) is EntryBatch:
            terms, kinds, commands = entries.terms, entries.kinds, entries.commands
            in_order = entries.first_index == first
        else:
            if not isinstance(entries, (list, tuple)):
                entries = list(entries)
            terms = [e.term for e in entries]
            kinds = [e.kind for e in entries]
            commands = [e.command for e in entries]
            in_order = [e.index for e in entries] == list(range(first, first + len(commands)))
        n = len(commands)
        if not n:
            return
        term, kind = terms[0], kinds[0]
        lens = _lengths(commands)
        # The usual batch (in order, one term, one kind, bytes) is checked with C-speed calls
        # and bulk-loaded; anything else goes through EntryLog.append's per-entry checks.
        if (
            in_order
            and 0 <= kind <= 2
            and term >= log.last_term()
            and terms.count(term) == n
            and kinds.count(kind) == n
            and set(map(type, commands)) == _BYTES_ONLY
        ):
            log.extend_raw([term] * n, bytes((kind,)) * n, commands)
            self._log_append(first, [(term, int(kind), n)], commands, lens)
            return
        log.append(entries)  # raises MemoryLog's errors; converts commands to bytes
        terms, kinds, commands = log.slices(first, log.last_index())
        self._log_append(first, _runs(terms, kinds), commands, _lengths(commands))

    def append_commands(self, term: int, kind: int, commands: Sequence[bytes]) -> int:
        """Append one entry per command, all in `term` with `kind`, as one record; returns
        the new last index. The cheapest way in: no LogEntry is built."""
        self._check()
        if self._snap_write is not None:
            self._advance_snapshot()
        if not 0 <= kind <= 2:
            raise ValueError(f"append_commands: invalid entry kind {kind!r}")
        first = self._entries.last_index() + 1
        lens = _lengths(commands)
        last = self._entries.append_commands(term, kind, commands)
        if last >= first:
            self._log_append(first, [(term, kind, last - first + 1)], commands, lens)
        return last

    def truncate(self, from_index: int) -> None:
        """Drop every entry at or after `from_index` (ValueError at or below the snapshot)."""
        self._check()
        if self._snap_write is not None:
            self._advance_snapshot()
        log = self._entries
        if from_index <= log.offset or from_index > log.last_index():
            log.truncate(from_index)  # raises below the snapshot; past the end there is nothing to drop
            return
        payload = fmt.truncate_payload(from_index)
        try:
            self._put(fmt.TRUNCATE, [payload], len(payload))
        except OSError as e:
            raise self._fail(e, "truncate") from e
        self._logged_last = from_index - 1
        log.truncate(from_index)

    def hard_state(self) -> HardState:
        self._check()
        return self._hard

    def set_hard_state(self, hs: HardState) -> None:
        self._check()
        if self._snap_write is not None:
            self._advance_snapshot()
        if hs == self._hard:
            return
        payload = fmt.hard_state_payload(hs)
        try:
            self._put(fmt.HARD_STATE, [payload], len(payload))
        except OSError as e:
            raise self._fail(e, "set_hard_state") from e
        self._hard = hs

    def sync(self) -> None:
        """Make every earlier write durable: one fdatasync, none if nothing changed."""
        self._check()
        if self._snap_write is not None:
            self._advance_snapshot()  # a finished snapshot file: its record goes in this sync
        if self._buf or self._pos != self._synced:
            try:
                self._sync_segment()
            except OSError as e:
                raise self._fail(e, "sync") from e
        if self._snap_write is not None:
            self._advance_snapshot()  # its record durable now: compact

    def flush(self) -> None:
        """Write the buffered records to the file, without waiting for the disk: a split
        `sync()`, whose second half is `sync_flushed()`. Nothing is durable yet."""
        self._check()
        if self._snap_write is not None:
            self._advance_snapshot()
        try:
            self._flush()
        except OSError as e:
            raise self._fail(e, "write") from e

    def sync_flushed(self) -> None:
        """Make durable everything written to the file so far (by `flush()`, or written out
        early): one fdatasync, none if nothing new was written. Records still buffered are not
        covered.

        This is the one method that may run in another thread while the owner goes on
        appending and flushing: the fdatasync releases the GIL, so the owner's next records
        are built and written while the disk works (pipelined group commit). Everything the
        owner flushed before this call started is covered once it returns. A failure is fatal
        as with `sync()`: the log raises StorageError from then on, in every thread.

        It does not move a background snapshot write on (`apply_snapshot`): it may run in
        the sync thread, and records are written only in the owner's. The owner's next call
        that writes finds the snapshot's record durable and compacts.
        """
        with self._sync_lock:
            self._check()
            pos = self._pos  # flushed bytes only: `_flush` advances it after its pwrite
            if pos == self._synced:
                return
            try:
                self._io.fdatasync(self._fd)
            except OSError as e:
                raise self._fail(e, "sync") from e
            if pos > self._synced:  # the owner may have synced further meanwhile
                self._synced = pos

    def snapshot_index(self) -> int:
        self._check()
        return self._snapshot.index

    def snapshot(self) -> Snapshot:
        self._check()
        return self._snapshot

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install `snapshot` as MemoryLog does (keep the entries above it if the log holds its
        index with its term, else drop them all), durably.

        A snapshot of this node's own log (it keeps the entries above) takes effect at once in
        memory, and its file is written by a background thread when the file layer allows it
        (writing ~8 MB and fsyncing it in the event loop's turn came near the election
        timeout): the owner's next write or sync that finds the file done writes the log
        record naming it, and once that record is durable, deletes what the snapshot covers.
        Until then the segments still hold every entry, so a crash recovers the old snapshot
        and the whole log, or the new one. A failed write raises StorageError then.

        A snapshot that replaces the log (from a leader), or one on a file layer without
        threads, is installed synchronously: it returns after the snapshot file and the log
        record naming it are synced, then deletes what the snapshot covers."""
        self._check()
        if snapshot.index < self._snapshot.index:
            raise ValueError(
                f"apply_snapshot: index {snapshot.index} is older than the current snapshot {self._snapshot.index}"
            )
        kept = self._entries.term_at(snapshot.index) == snapshot.term
        fmt.snapshot_payload(snapshot.index, snapshot.term, kept)  # range check before any write
        background = kept and self._io.threads
        if self._snap_write is not None:
            self._finish_snapshot()  # one at a time: the earlier one's record and compaction first
        try:
            # The log up to here is made durable before the snapshot file exists: recovery
            # finishes an install whose record is missing by replaying the log and then the
            # snapshot, which must see every write that came before it.
            self._sync_segment()
            if not background:
                write_snapshot(self._io, self._dir, snapshot)
                self._put_snapshot(snapshot.index, snapshot.term, kept)
                self._sync_segment()
        except OSError as e:
            raise self._fail(e, "apply_snapshot") from e
        if background:
            # Safe before the file is durable: the entries dropped here are still in the
            # segments, which are deleted only once the snapshot's record is durable.
            self._entries.compact(snapshot.index, snapshot.term)
            self._snapshot = snapshot
            self._snap_write = _SnapshotWrite(self._io, self._dir, snapshot)
            return
        self._entries.compact(snapshot.index, snapshot.term)
        self._snapshot = snapshot
        try:
            self._compact()
        except OSError as e:
            raise self._fail(e, "compaction") from e

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Sync what is buffered and release the files and the lock; later calls raise."""
        if self._failure is not None and self._lock_fd < 0:
            return
        error = None
        try:
            if self._failure is None:
                if self._snap_write is not None:
                    self._finish_snapshot()
                self._sync_segment()
        except OSError as e:
            error = self._fail(e, "close")
        finally:
            write, self._snap_write = self._snap_write, None
            if write is not None:  # after a failure: it writes nothing once the lock is released
                write.job.join()
            try:
                self._join_deleter()
            except OSError:
                pass  # files left to delete: the next recovery deletes them
            self._drop_spare()
            for fd in (self._fd, self._lock_fd):
                try:
                    self._io.close(fd)
                except OSError:
                    pass
            self._lock_fd = -1
            if self._failure is None:
                self._failure = StorageError(self._dir, "the WalLog is closed")
                self._rebind_dead()
        if error is not None:
            raise error

    def __enter__(self) -> "WalLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WalLog({self._dir!r})"

    # -- writing records -----------------------------------------------------------------------

    def _put(self, rtype: int, parts: List[bytes], size: int) -> None:
        """Buffer one record whose payload is `parts` (`size` bytes), rotating first if the
        active segment cannot hold it."""
        if self._pos + len(self._buf) + fmt.FRAME_SIZE + size > self._size:
            self._rotate(fmt.FRAME_SIZE + size)
        body = fmt.region(rtype, self._synced, parts, size)
        buf = self._buf
        buf += fmt.prefix(self._magic, crc32c.crc32c(body, self._seed))
        buf += body
        if len(buf) >= _FLUSH_BYTES:
            self._flush()

    def _log_append(self, first: int, runs: List[fmt.Run], commands: Sequence[bytes], lens: array) -> None:
        """Write APPEND records for entries already in the entry log: one record, or several
        for an append too large for one. A crash between those keeps a prefix of the entries,
        which is still a log this node could have had."""
        try:
            data_size = sum(lens)
            if fmt.APPEND_OVERHEAD + len(runs) * fmt.ENTRY_OVERHEAD + 4 * len(lens) + data_size <= fmt.MAX_PAYLOAD:
                self._put_append(first, runs, commands, lens, data_size)
                return
            terms = [term for term, _, n in runs for _ in range(n)]
            kinds = [kind for _, kind, n in runs for _ in range(n)]
            start, n = 0, len(lens)
            while start < n:
                stop = start + 1
                size = fmt.APPEND_OVERHEAD + fmt.ENTRY_OVERHEAD + lens[start]
                while stop < n and size + fmt.ENTRY_OVERHEAD + lens[stop] <= fmt.MAX_PAYLOAD:
                    size += fmt.ENTRY_OVERHEAD + lens[stop]
                    stop += 1
                chunk = lens[start:stop]
                runs = _runs(terms[start:stop], kinds[start:stop])
                self._put_append(first + start, runs, commands[start:stop], chunk, sum(chunk))
                start = stop
        except OSError as e:
            raise self._fail(e, "append") from e

    def _put_append(self, first: int, runs: List[fmt.Run], commands: Sequence[bytes], lens: array, data_size: int) -> None:
        parts, size = fmt.append_payload(first, runs, lens, commands, data_size)
        self._put(fmt.APPEND, parts, size)
        self._logged_last = last = first + len(lens) - 1
        if last > self._high_water:
            self._high_water = last

    def _put_snapshot(self, index: int, term: int, kept: bool) -> None:
        payload = fmt.snapshot_payload(index, term, kept)
        self._put(fmt.SNAPSHOT, [payload], len(payload))
        self._logged_snap = (index, term)
        if not kept:
            self._logged_last = index

    def _flush(self) -> None:
        buf = self._buf
        if buf:
            self._io.pwrite(self._fd, buf, self._pos)
            self._pos += len(buf)
            buf.clear()
            # Prepare the next segment as soon as this one is written to: while segments still
            # double, the spare is twice this segment's size, and started at half full it was
            # not ready in time (the rotation waited 20-90 ms, and longer as they grew, at
            # 80k writes/s). A log that never outgrows its first segment waits until it is
            # half full, so a small log never pays for a spare.
            if self._spare is None and (self._seq > 1 or 2 * self._pos > self._size):
                size = self._next_size()
                recycled = self._take_recycled(size)
                if recycled is not None:
                    self._spare = _Spare(self._io, self._dir, self._seq + 1, recycled[1], recycled[0])
                else:
                    self._spare = _Spare(self._io, self._dir, self._seq + 1, size)

    def _sync_segment(self) -> None:
        self._flush()
        with self._sync_lock:
            if self._pos != self._synced:
                self._io.fdatasync(self._fd)
                self._synced = self._pos

    def _preamble(self, seq: int, prev_end: int) -> bytes:
        snap_index, snap_term = self._logged_snap
        header = fmt.Header(seq, prev_end, self._high_water, self._logged_last, snap_index, snap_term, self._hard)
        return fmt.frame(fmt.HEADER, 0, fmt.header_payload(header), fmt.segment_seed(seq))

    def _next_size(self) -> int:
        # Doubled from the size the active segment was meant to have, not the size it got: a
        # segment cut short because its spare was late (`_rotate`) would otherwise make every
        # later one small too, and rotate ever more often on a disk that cannot keep up.
        return min(self._segment_bytes, 2 * self._planned)

    def _rotate(self, need: int) -> None:
        """Seal the active segment and start the next one, which must fit `need` more bytes."""
        # The old segment is durable before the new one exists: only the last segment may
        # ever hold a torn write.
        self._sync_segment()
        seq = self._seq + 1
        preamble = self._preamble(seq, self._pos)
        least = len(preamble) + need
        planned = max(self._next_size(), least)
        # A spare still being zeroed is stopped and used as far as it got, if that holds the
        # record: waiting for all of it blocked the event loop for 0.2-0.3 s at 200k writes/s,
        # past the election timeout. Only a spare too short even for this record is replaced.
        spare, self._spare = self._spare, None
        size = spare.stop() if spare is not None else 0
        if size < least:
            # Made on the spot, in the writer's thread: as large as the record needs and not much
            # more, since zeroing a whole 64 MiB here would block the event loop for ~0.5 s.
            size = max(least, min(planned, _ON_THE_SPOT_BYTES))
            prepare_segment(self._io, self._dir, seq, size)
        install_segment(self._io, self._dir, seq, preamble)
        fd = self._io.open_rw(os.path.join(self._dir, segment_name(seq)))
        with self._sync_lock:  # no sync_flushed sees half of the switch, or fsyncs a closed fd
            old, self._fd = self._fd, fd
            self._seq, self._size, self._planned, self._seed = seq, size, planned, fmt.segment_seed(seq)
            self._magic = fmt.segment_magic(self._seed)
            self._pos = self._synced = len(preamble)
            self._segments.append(SegmentInfo(seq, segment_name(seq), self._high_water, size))
            self._io.close(old)

    def _compact(self) -> None:
        """Delete the segments every entry of which the snapshot covers, oldest first, and the
        older snapshot files. Needs the snapshot's record to be durable already.

        The largest covered segment is kept, renamed (`recycled_name`), to be a later spare
        (`_take_recycled`), unless a larger one already waits: reusing it spares the disk the
        spare's zeros (64 MiB once segments are full size), whose writeback delayed every
        node's fdatasyncs on a shared disk (a 4 KB fdatasync waited up to 146 ms behind them),
        and the deletion. On a file layer
        with threads a background thread does all this: unlinking a 64 MiB segment drops its
        page cache and frees its blocks, 70-130 ms of the event loop's turn under load.
        Nothing reads them any more, and a crash that leaves some is repaired by recovery, as
        after a compaction cut short. One deleter at a time, so that the files still go
        oldest first and the segments left are always the newest ones."""
        self._join_deleter()
        covered = self._snapshot.index
        segments = self._segments
        keep = max((i for i, s in enumerate(segments) if s.high_water <= covered), default=0)
        recycle = None
        names = [s.name for s in segments[:keep]]
        largest = max(segments[:keep], key=lambda s: s.size, default=None)
        waiting = self._recycled
        if largest is not None and largest.size > (waiting[1] if waiting else 0):
            recycle = (largest.name, recycled_name(largest.seq))
            self._recycled = (recycle[1], largest.size)
            if waiting is not None:
                names.append(waiting[0])  # the smaller one it replaces
        del segments[:keep]
        for name in self._io.listdir(self._dir):
            index = parse_snapshot_name(name)
            if index is not None and index < covered:
                names.append(name)
        if self._io.threads:
            self._deleter = _Background("wal-delete", self._retire, names, recycle)
        else:
            self._retire(names, recycle)

    def _retire(self, names: List[str], recycle: Optional[Tuple[str, str]]) -> None:
        """Delete `names`, oldest first, but rename the one `recycle` names (old, new). The
        rename is made durable before the file can be reused: a crash must not bring back the
        old name on a file that holds a newer segment's header."""
        for name in names:
            if recycle is not None and name == recycle[0]:
                self._io.rename(os.path.join(self._dir, name), os.path.join(self._dir, recycle[1]))
                self._io.fsync_dir(self._dir)
            else:
                self._unlink(name)

    def _take_recycled(self, size: int) -> Optional[Tuple[str, int]]:
        """The recycled segment (name, size), taken to be the spare planned at `size` bytes, or
        None to zero-fill one. It is taken if at least half that size: a shorter segment only
        means an earlier rotation, as after a late spare. Never waits for the deleter (which
        renames it into place): a spare it would delay is zero-filled instead."""
        deleter = self._deleter
        if deleter is not None and deleter.done():
            self._join_deleter()
        recycled = self._recycled
        if recycled is not None and 2 * recycled[1] >= size and self._deleter is None:
            self._recycled = None
            return recycled
        return None

    def _join_deleter(self) -> None:
        """Wait for the files of the last compaction to be deleted; raise what deleting them raised."""
        deleter, self._deleter = self._deleter, None
        if deleter is not None:
            try:
                deleter.result()
            except BaseException:
                self._recycled = None  # whether its rename happened is unknown
                raise

    def _advance_snapshot(self) -> None:
        """Move the background snapshot write on, in the owner's thread, without waiting: once
        its file is written, buffer the record naming it (the next sync makes it durable); once
        that record is durable, compact. Raises StorageError if writing the file failed."""
        write = self._snap_write
        assert write is not None
        try:
            if write.record is None:
                if not write.job.done():
                    return
                self._log_snapshot(write)
            assert write.record is not None
            seq, end = write.record
            # durable: synced that far, or sealed (a rotation syncs the old segment first)
            if seq < self._seq or self._synced >= end:
                self._snap_write = None
                self._compact()
        except OSError as e:
            raise self._fail(e, "snapshot") from e

    def _finish_snapshot(self) -> None:
        """Wait for the background snapshot write, make its record durable and compact."""
        write = self._snap_write
        assert write is not None
        try:
            if write.record is None:
                self._log_snapshot(write)
            self._sync_segment()
            self._snap_write = None
            self._compact()
        except OSError as e:
            raise self._fail(e, "snapshot") from e

    def _log_snapshot(self, write: "_SnapshotWrite") -> None:
        """Buffer the record naming `write`'s snapshot, whose file is whole; raises what writing
        the file raised. Remembers where the record ends, to tell when it is durable."""
        try:
            write.job.result()
        except BaseException as error:
            self._snap_write = None
            if isinstance(error, OSError):
                raise
            raise OSError(f"writing the snapshot file: {error!r}") from error
        snapshot = write.snapshot
        self._put_snapshot(snapshot.index, snapshot.term, True)
        write.record = (self._seq, self._pos + len(self._buf))

    def _drop_spare(self) -> None:
        """Stop the next segment's preparation and delete its temp file (on close)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            try:
                spare.stop()
                self._unlink(segment_name(spare.seq) + TMP_SUFFIX)
            except OSError:
                pass  # a leftover temp file is deleted by the next recovery

    def _unlink(self, name: str) -> None:
        try:
            self._io.unlink(os.path.join(self._dir, name))
        except FileNotFoundError:
            pass

    # -- validation and failure ----------------------------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            self._dead()

    def _fail(self, error: OSError, operation: str) -> StorageError:
        """Enter the failed state for good: after a failed write or fsync the file contents
        are unknown, and retrying an fsync can report success for data that was dropped."""
        context = error.filename or os.path.join(self._dir, segment_name(self._seq))
        self._failure = StorageError(context, f"{operation} failed ({error.strerror or error}); the log is unusable")
        self._rebind_dead()
        return self._failure

    def _rebind_dead(self) -> None:
        for name in _READS:
            setattr(self, name, self._dead)

    def _dead(self, *args: object) -> NoReturn:
        failure = self._failure
        assert failure is not None
        raise StorageError(failure.context, failure.detail)


class _Background:
    """`fn(*args)` on a daemon thread; `result()` joins it and returns what it returned, or
    raises what it raised, in the WAL's thread."""

    __slots__ = ("_thread", "_value", "_error")

    def __init__(self, name: str, fn: Callable[..., object], *args: object) -> None:
        self._value: object = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., object], args: tuple) -> None:
        try:
            self._value = fn(*args)
        except BaseException as e:  # handed to the WAL's thread by result()
            self._error = e

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> None:
        """Wait for it, whatever it returns or raises."""
        self._thread.join()

    def result(self) -> object:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value




class _Spare:
    """The next segment's temp file, made ahead of need (`_flush` says when): a recycled
    segment renamed (`recycled`), or zero-filled. On a background thread when the file layer
    allows it, so rotation only writes a header (the zero-fill is ~0.1 s of CPU and more of
    disk per 64 MiB, nearly all of it in system calls, which release the GIL); otherwise at
    once, on the caller's thread."""

    def __init__(self, io: FileIO, directory: str, seq: int, size: int, recycled: Optional[str] = None) -> None:
        self.seq, self.size = seq, size
        self._stop = threading.Event()
        self._job: Optional[_Background] = None
        make: Callable[..., object]
        if recycled is not None:
            make, args = reuse_segment, (io, directory, recycled, seq, size)
        elif io.threads:
            make, args = prepare_segment, (io, directory, seq, size, self._stop)
        else:
            make, args = prepare_segment, (io, directory, seq, size)
        if io.threads:
            self._job = _Background(f"wal-prepare-{seq}", make, *args)
        else:
            make(*args)

    def stop(self) -> int:
        """Have the thread end at its next piece boundary (a few ms), and return how many bytes
        of the temp file are zeroed and fsynced: all of them if it had finished. Raises what
        preparing it raised. The thread is joined first, so it writes no zeros once the file
        is in use."""
        self._stop.set()
        if self._job is not None:
            self.size = self._job.result()  # type: ignore[assignment]
        return self.size


class _SnapshotWrite:
    """A snapshot file being written on a background thread (`apply_snapshot`). The WAL's
    thread writes the record naming it once the thread is done; `record` is then the segment
    and offset where that record ends."""

    __slots__ = ("snapshot", "job", "record")

    def __init__(self, io: FileIO, directory: str, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.record: Optional[Tuple[int, int]] = None
        self.job = _Background(f"wal-snapshot-{snapshot.index}", write_snapshot, io, directory, snapshot, True)


def _runs(terms: Sequence[int], kinds: Sequence[int]) -> List[fmt.Run]:
    return [(term, int(kind), len(list(group))) for (term, kind), group in groupby(zip(terms, kinds))]


def _lengths(commands: Sequence[bytes]) -> array:
    """The commands' lengths, checked against the format's limit before anything changes."""
    lens = array("I", map(len, commands))
    if lens and max(lens) > fmt.MAX_ENTRY_BYTES:
        raise ValueError(f"append: a command of {max(lens)} bytes exceeds the WAL's limit of {fmt.MAX_ENTRY_BYTES}")
    return lens
