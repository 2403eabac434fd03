"""WalLog's split sync: `flush()` writes without waiting, `sync_flushed()` makes what was
flushed durable, possibly from another thread while the owner keeps writing (the runtime's
pipelined durability). The rules: a sync covers exactly what was flushed before it started,
never records still buffered; a failed one is fatal, as with `sync()`."""

from __future__ import annotations

import errno
import random
import threading

import pytest

from raftfast import EntryKind, HardState, LogEntry
from raftfast.errors import StorageError
from raftfast.wal import WalLog
from raftfast.wal.faults import FaultyIO
from wal_workload import state


def entries(first, n, term=1, size=40):
    return [LogEntry(term, i, EntryKind.NORMAL, bytes([i % 251]) * size) for i in range(first, first + n)]


def open_log(path, io=None, segment_bytes=4096):
    return WalLog.open(path, segment_bytes=segment_bytes, io=io if io is not None else FaultyIO())


def test_flushed_records_reach_the_file_but_are_durable_only_after_sync_flushed(tmp_path):
    for mode, expect in (("keep", 8), ("drop", 3)):
        path = tmp_path / mode
        io = FaultyIO()
        log = open_log(path, io)
        log.append(entries(1, 3))
        log.sync()
        log.append(entries(4, 5))
        log.flush()
        io.crash(mode)  # a process crash keeps the page cache; a power cut does not
        with open_log(path) as log:
            assert log.last_index() == expect

    path = tmp_path / "synced"
    io = FaultyIO()
    log = open_log(path, io)
    log.append(entries(1, 3))
    log.set_hard_state(HardState(2, 1))
    log.flush()
    log.sync_flushed()
    synced = state(log)
    io.crash("drop")
    with open_log(path) as log:
        assert state(log) == synced


def test_sync_flushed_does_not_cover_what_is_still_buffered(tmp_path):
    io = FaultyIO()
    log = open_log(tmp_path, io, segment_bytes=1 << 20)
    log.append(entries(1, 4))
    log.flush()
    log.append(entries(5, 4))  # buffered, not flushed
    log.sync_flushed()
    io.crash("drop")
    with open_log(tmp_path, segment_bytes=1 << 20) as log:
        assert log.last_index() == 4


def test_sync_flushed_without_new_writes_does_not_touch_the_disk(tmp_path):
    io = FaultyIO()
    log = open_log(tmp_path, io)
    log.append(entries(1, 2))
    log.sync()
    steps = io.steps
    log.sync_flushed()
    log.flush()
    log.sync_flushed()
    assert io.steps == steps
    log.close()


def test_a_failed_sync_flushed_is_fatal_and_never_retried(tmp_path):
    io = FaultyIO()
    log = open_log(tmp_path, io)
    log.append(entries(1, 3))
    log.sync()
    synced = state(log)
    io.fail("fdatasync", errno.EIO)
    log.append(entries(4, 3))
    log.flush()
    error = []
    worker = threading.Thread(target=lambda: _catch(log.sync_flushed, error))
    worker.start()
    worker.join()
    assert error and isinstance(error[0], StorageError) and "sync failed" in str(error[0])
    steps = io.steps
    for call in (log.sync_flushed, log.sync, log.flush, log.last_index, lambda: log.append(entries(7, 1))):
        with pytest.raises(StorageError):
            call()
    assert io.steps == steps, "a failed log touched the disk again"
    log.close()
    io.crash("drop")
    with open_log(tmp_path) as log:
        assert state(log) == synced


def test_a_failed_flush_is_fatal(tmp_path):
    io = FaultyIO()
    log = open_log(tmp_path, io)
    log.append(entries(1, 3))
    io.fail("pwrite", errno.ENOSPC, path_contains="segment-")
    with pytest.raises(StorageError, match="write failed"):
        log.flush()
    with pytest.raises(StorageError):
        log.sync_flushed()
    log.close()


def test_a_syncing_thread_alongside_a_writer_that_rotates(tmp_path):
    """The pipelined pattern with real files: the owner appends, flushes and rotates through
    small segments while another thread syncs whatever was flushed. Every batch that a sync
    covered (flushed before the sync started) is there after reopening, in order."""
    log = WalLog.open(tmp_path, segment_bytes=16384)
    rng = random.Random(7)
    flushed = [0]  # last index flushed
    durable = [0]  # last index a completed sync covered
    failure = []
    stop = threading.Event()
    wake = threading.Condition()

    def syncer():
        try:
            while not stop.is_set():
                with wake:
                    wake.wait(0.002)
                target = flushed[0]
                log.sync_flushed()
                durable[0] = max(durable[0], target)
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)

    thread = threading.Thread(target=syncer)
    thread.start()
    last = 0
    try:
        for turn in range(300):
            n = rng.randint(1, 20)
            log.append(entries(last + 1, n, term=1 + turn // 100, size=rng.randint(1, 300)))
            last += n
            if turn % 37 == 0:
                log.set_hard_state(HardState(1 + turn // 100, None))
            log.flush()
            flushed[0] = last
            with wake:
                wake.notify()
    finally:
        stop.set()
        thread.join()
    assert not failure, failure
    assert durable[0] > 0
    expected = state(log)
    log.close()
    with WalLog.open(tmp_path, segment_bytes=16384) as log:
        assert state(log) == expected
        assert log.last_index() == last


def _catch(call, into):
    try:
        call()
    except BaseException as exc:
        into.append(exc)
