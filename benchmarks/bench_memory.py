"""asv: peak memory of a 1M-entry EntryLog and of a WalLog recovery, and recovery time.

asv's `peakmem_*` is the peak resident size of the whole benchmark process (interpreter,
imports and setup included), so these track growth from commit to commit rather than the
bytes of one structure; the size of the structure itself is in the `track_*` next to them.
"""

from __future__ import annotations

import gc
import os
import resource

from raftfast.log._entries import EntryLog  # the live build's kernel
from raftfast.wal import WalLog

from .workloads import BATCH

ENTRIES = 1_000_000
WAL_ENTRIES = 500_000


def _fill(log: EntryLog, entries: int) -> None:
    """Append `entries` distinct 64-byte commands, 256 per call (as the leader does)."""
    for start in range(0, entries, BATCH):
        log.append_commands(1, 0, [b"%064d" % i for i in range(start, min(entries, start + BATCH))])


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class EntryLogMemory:
    """A 1,000,000-entry log of distinct 64-byte commands."""

    timeout = 120

    def peakmem_entry_log_1m(self):
        log = EntryLog()
        _fill(log, ENTRIES)
        assert log.last_index() == ENTRIES

    def track_entry_log_1m_bytes_per_entry(self):
        gc.collect()
        before = _rss_bytes()
        log = EntryLog()
        _fill(log, ENTRIES)
        after = _rss_bytes()
        assert log.last_index() == ENTRIES
        return (after - before) / ENTRIES

    track_entry_log_1m_bytes_per_entry.unit = "bytes"


class WalRecovery:
    """WalLog.open of a 500,000-entry WAL (64-byte commands) written once by setup_cache into
    asv's per-benchmark temporary directory; warm page cache."""

    timeout = 300
    number = 1
    repeat = (3, 10, 30.0)

    def setup_cache(self):
        path = os.path.abspath("wal-500k")
        with WalLog.open(path) as log:
            for start in range(0, WAL_ENTRIES, BATCH):
                log.append_commands(1, 0, [b"%064d" % i for i in range(start, min(WAL_ENTRIES, start + BATCH))])
            log.sync()
        return path

    def peakmem_wal_recovery(self, path):
        log = WalLog.open(path)
        try:
            assert log.last_index() == WAL_ENTRIES
        finally:
            log.close()

    def time_wal_recovery(self, path):
        WalLog.open(path).close()
