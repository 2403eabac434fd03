"""EntryLog (the packed in-memory entry kernel): both twins side by side.

Appends fill a fresh log with 64 batches of 256 x 64-byte commands per round (16,384 entries),
so memory stays bounded however many rounds pytest-benchmark chooses. Reads run against a
100,000-entry log. Truncate and compact mutate, so each round gets a fresh log (built outside
the timing) through `benchmark.pedantic`.
"""

from __future__ import annotations

import pytest

from raftfast.types import EntryKind, LogEntry

from _twins import twin_module

BATCH = 256
BATCHES = 64
VALUE = b"v" * 64
COMMANDS = [VALUE] * BATCH
READ_LOG = 100_000


def _log(twin: str, entries: int = 0, term: int = 1):
    log = twin_module("log._entries", twin).EntryLog()
    for start in range(0, entries, BATCH):
        log.append_commands(term, 0, COMMANDS[: min(BATCH, entries - start)])
    return log


@pytest.fixture(scope="module")
def entry_batches():
    return [
        [LogEntry(1, b * BATCH + i + 1, EntryKind.NORMAL, VALUE) for i in range(BATCH)]
        for b in range(BATCHES)
    ]


def test_append(benchmark, twin, entry_batches):
    """append(list of 256 LogEntry) x 64 into a fresh log."""
    EntryLog = twin_module("log._entries", twin).EntryLog
    benchmark.group = "EntryLog.append 64 x 256 LogEntry"
    benchmark.extra_info["entries"] = BATCH * BATCHES

    def fill():
        log = EntryLog()
        for batch in entry_batches:
            log.append(batch)
        return log

    assert benchmark(fill).last_index() == BATCH * BATCHES


def test_append_batch(benchmark, twin):
    """append(EntryBatch): the follower's path (a decoded AppendEntries carries a batch)."""
    kernel = twin_module("log._entries", twin)
    source = _log(twin, BATCH * BATCHES)
    batches = [source.batch(1 + b * BATCH, BATCH, 1 << 30) for b in range(BATCHES)]
    benchmark.group = "EntryLog.append 64 x EntryBatch(256)"
    benchmark.extra_info["entries"] = BATCH * BATCHES

    def fill():
        log = kernel.EntryLog()
        for batch in batches:
            log.append(batch)
        return log

    assert benchmark(fill).last_index() == BATCH * BATCHES


def test_append_commands(benchmark, twin):
    """append_commands(term, kind, 256 commands) x 64 into a fresh log: the leader's path."""
    EntryLog = twin_module("log._entries", twin).EntryLog
    benchmark.group = "EntryLog.append_commands 64 x 256"
    benchmark.extra_info["entries"] = BATCH * BATCHES

    def fill():
        log = EntryLog()
        for _ in range(BATCHES):
            log.append_commands(1, 0, COMMANDS)
        return log

    assert benchmark(fill).last_index() == BATCH * BATCHES


def test_term_at(benchmark, twin):
    """term_at at 1,024 indexes spread over a 100,000-entry log."""
    log = _log(twin, READ_LOG)
    indexes = list(range(1, READ_LOG + 1, READ_LOG // 1024))[:1024]
    term_at = log.term_at
    benchmark.group = "EntryLog.term_at x 1024"

    def lookups():
        for i in indexes:
            term_at(i)

    benchmark(lookups)


def test_batch(benchmark, twin):
    """batch(lo, 256, 1 MiB): one AppendEntries worth of entries from a 100,000-entry log."""
    log = _log(twin, READ_LOG)
    benchmark.group = "EntryLog.batch 256"
    result = benchmark(log.batch, READ_LOG // 2, BATCH, 1 << 20)
    assert len(result) == BATCH


def test_truncate(benchmark, twin):
    """truncate half of a 16,384-entry log (the fresh log is built outside the timing)."""
    size = BATCH * BATCHES
    benchmark.group = "EntryLog.truncate 8192 of 16384"

    def setup():
        return (_log(twin, size),), {}

    benchmark.pedantic(lambda log: log.truncate(size // 2 + 1), setup=setup, rounds=200, iterations=1)


def test_compact(benchmark, twin):
    """compact the first half of a 16,384-entry log (fresh log per round, built untimed)."""
    size = BATCH * BATCHES
    benchmark.group = "EntryLog.compact 8192 of 16384"

    def setup():
        return (_log(twin, size),), {}

    benchmark.pedantic(lambda log: log.compact(size // 2, 1), setup=setup, rounds=200, iterations=1)
