"""The entry kernel (EntryLog, each importable twin) and MemoryLog."""

from __future__ import annotations

import importlib

import pytest

from raftfast import EntryKind, HardState, LogEntry, MemoryLog, Membership, RaftLog, Snapshot
from raftfast.log import _entries_py


def _twins():
    twins = [_entries_py.EntryLog]
    try:
        twins.append(importlib.import_module("raftfast.log._entries_c").EntryLog)
    except ImportError:
        pass
    return twins


@pytest.fixture(params=_twins(), ids=lambda cls: cls.__module__.rsplit(".", 1)[-1])
def EntryLog(request):
    return request.param


def e(term, index, command=None, kind=EntryKind.NORMAL):
    return LogEntry(term, index, kind, f"c{index}".encode() if command is None else command)


def filled(EntryLog, terms, offset=0, offset_term=0):
    log = EntryLog(offset, offset_term)
    log.append([e(t, offset + 1 + i) for i, t in enumerate(terms)])
    return log


# ---------------------------------------------------------------- EntryLog: reads


def test_empty_log(EntryLog):
    log = EntryLog()
    assert len(log) == 0
    assert log.last_index() == 0 and log.last_term() == 0
    assert log.term_at(0) == 0
    assert log.term_at(1) is None
    assert log.term_at(-1) is None
    assert log.entries(1, 0) == []
    with pytest.raises(IndexError):
        log.entry(0)
    with pytest.raises(IndexError):
        log.entry(1)


def test_term_at_edges(EntryLog):
    log = filled(EntryLog, [1, 1, 2], offset=5, offset_term=1)
    assert log.term_at(4) is None  # below the offset: compacted away
    assert log.term_at(5) == 1  # the offset itself: its term is known
    assert [log.term_at(i) for i in (6, 7, 8)] == [1, 1, 2]
    assert log.term_at(9) is None  # past the end
    assert log.last_index() == 8 and log.last_term() == 2


def test_entry_and_entries_roundtrip_kind_and_command(EntryLog):
    log = EntryLog()
    items = [
        LogEntry(1, 1, EntryKind.NOOP, b""),
        LogEntry(1, 2, EntryKind.NORMAL, b"x" * 10),
        LogEntry(2, 3, EntryKind.CONFIG, Membership.of([1, 2]).encode()),
    ]
    log.append(items)
    assert log.entries(1, 3) == items
    assert log.entry(2) == items[1]
    assert log.entries(2, 2) == [items[1]]
    assert log.entries(3, 2) == []
    assert log.payload_bytes == 10 + len(items[2].command)


def test_entries_outside_the_log_raise(EntryLog):
    log = filled(EntryLog, [1, 1], offset=3, offset_term=1)
    with pytest.raises(IndexError):
        log.entries(3, 4)  # 3 is the offset: compacted
    with pytest.raises(IndexError):
        log.entries(4, 6)  # 6 is past the end
    with pytest.raises(IndexError):
        log.entry(6)


# ---------------------------------------------------------------- EntryLog: append


def test_append_must_start_at_last_plus_one(EntryLog):
    log = filled(EntryLog, [1, 1])
    with pytest.raises(ValueError):
        log.append([e(1, 4)])  # gap
    with pytest.raises(ValueError):
        log.append([e(1, 2)])  # overlap
    log.append([e(1, 3)])
    assert log.last_index() == 3


def test_append_rejects_a_gap_inside_the_batch_all_or_nothing(EntryLog):
    log = filled(EntryLog, [1])
    with pytest.raises(ValueError):
        log.append([e(1, 2), e(1, 4)])
    assert log.last_index() == 1
    assert log.payload_bytes == len(b"c1")


def test_append_rejects_decreasing_terms_all_or_nothing(EntryLog):
    log = filled(EntryLog, [2])
    with pytest.raises(ValueError):
        log.append([e(1, 2)])
    with pytest.raises(ValueError):
        log.append([e(3, 2), e(2, 3)])
    assert log.last_index() == 1 and log.last_term() == 2


def test_append_after_offset(EntryLog):
    log = EntryLog(10, 3)
    with pytest.raises(ValueError):
        log.append([e(2, 11)])  # below the snapshot's term
    log.append([e(3, 11), e(4, 12)])
    assert log.last_index() == 12 and log.term_at(11) == 3


def test_append_empty_is_a_noop(EntryLog):
    log = filled(EntryLog, [1])
    log.append([])
    assert log.last_index() == 1


def test_append_accepts_bytes_like_commands(EntryLog):
    log = EntryLog()
    log.append([LogEntry(1, 1, EntryKind.NORMAL, bytearray(b"ab")), LogEntry(1, 2, EntryKind.NORMAL, memoryview(b"cd"))])
    assert [x.command for x in log.entries(1, 2)] == [b"ab", b"cd"]
    assert all(type(x.command) is bytes for x in log.entries(1, 2))


def test_append_commands(EntryLog):
    log = filled(EntryLog, [2])
    assert log.append_commands(3, int(EntryKind.NORMAL), [b"a", b"bb"]) == 3
    assert log.entries(2, 3) == [LogEntry(3, 2, EntryKind.NORMAL, b"a"), LogEntry(3, 3, EntryKind.NORMAL, b"bb")]
    with pytest.raises(ValueError):
        log.append_commands(1, 0, [b"x"])
    assert log.last_index() == 3


# ---------------------------------------------------------------- EntryLog: truncate / compact


def test_truncate_drops_the_suffix(EntryLog):
    log = filled(EntryLog, [1, 1, 2, 2])
    log.truncate(3)
    assert log.last_index() == 2 and log.last_term() == 1
    assert log.term_at(3) is None
    assert log.payload_bytes == len(b"c1") + len(b"c2")
    log.append([e(5, 3)])  # the freed slot can be rewritten in a new term
    assert log.term_at(3) == 5


def test_truncate_past_the_end_is_a_noop(EntryLog):
    log = filled(EntryLog, [1, 1])
    log.truncate(3)
    log.truncate(100)
    assert log.last_index() == 2


def test_truncate_everything_above_the_offset(EntryLog):
    log = filled(EntryLog, [1, 2], offset=4, offset_term=1)
    log.truncate(5)
    assert log.last_index() == 4 and log.last_term() == 1 and len(log) == 0


def test_truncate_at_or_below_the_offset_raises(EntryLog):
    log = filled(EntryLog, [1, 2], offset=4, offset_term=1)
    with pytest.raises(ValueError):
        log.truncate(4)
    with pytest.raises(ValueError):
        log.truncate(1)
    assert log.last_index() == 6


def test_compact_keeps_a_matching_suffix(EntryLog):
    log = filled(EntryLog, [1, 1, 2, 3])
    log.compact(2, 1)
    assert log.offset == 2 and log.offset_term == 1
    assert log.term_at(1) is None and log.term_at(2) == 1
    assert [x.index for x in log.entries(3, 4)] == [3, 4]
    assert log.payload_bytes == len(b"c3") + len(b"c4")
    with pytest.raises(IndexError):
        log.entry(2)


def test_compact_through_the_last_entry_empties(EntryLog):
    log = filled(EntryLog, [1, 2])
    log.compact(2, 2)
    assert len(log) == 0 and log.last_index() == 2 and log.last_term() == 2
    assert log.payload_bytes == 0


def test_compact_with_a_mismatching_term_empties_the_log(EntryLog):
    log = filled(EntryLog, [1, 1, 2])
    log.compact(2, 5)  # a leader's snapshot that disagrees with what we hold
    assert len(log) == 0
    assert log.last_index() == 2 and log.last_term() == 5
    assert log.term_at(3) is None


def test_compact_beyond_the_end_moves_the_offset(EntryLog):
    log = filled(EntryLog, [1])
    log.compact(10, 4)
    assert log.last_index() == 10 and log.term_at(10) == 4 and len(log) == 0
    log.append([e(4, 11)])
    assert log.last_index() == 11


def test_compact_below_the_offset_raises(EntryLog):
    log = EntryLog(5, 2)
    with pytest.raises(ValueError):
        log.compact(4, 2)
    log.compact(5, 2)  # at the offset: allowed, nothing changes
    assert log.offset == 5


# ---------------------------------------------------------------- EntryLog: batch


def test_batch_respects_max_count(EntryLog):
    log = filled(EntryLog, [1] * 10)
    assert [x.index for x in log.batch(3, 4, 1 << 20)] == [3, 4, 5, 6]
    assert [x.index for x in log.batch(9, 4, 1 << 20)] == [9, 10]


def test_batch_at_last_plus_one_is_empty(EntryLog):
    log = filled(EntryLog, [1] * 3)
    assert log.batch(4, 10, 100) == []


def test_batch_outside_the_log_raises(EntryLog):
    log = filled(EntryLog, [1] * 3, offset=2, offset_term=1)
    with pytest.raises(IndexError):
        log.batch(2, 10, 100)  # compacted
    with pytest.raises(IndexError):
        log.batch(7, 10, 100)  # beyond last+1


def test_batch_byte_limit_always_sends_the_first_entry(EntryLog):
    log = EntryLog()
    log.append([e(1, 1, b"x" * 100), e(1, 2, b"y"), e(1, 3, b"z")])
    batch = log.batch(1, 10, 10)
    assert [x.index for x in batch] == [1]  # larger than the limit, but never starve
    assert batch[0].command == b"x" * 100


def test_batch_byte_limit_stops_before_exceeding(EntryLog):
    log = EntryLog()
    log.append([e(1, i, b"a" * 4) for i in range(1, 6)])
    assert [x.index for x in log.batch(1, 10, 12)] == [1, 2, 3]  # exactly 12 fits
    assert [x.index for x in log.batch(1, 10, 11)] == [1, 2]
    assert [x.index for x in log.batch(2, 10, 8)] == [2, 3]
    assert [x.index for x in log.batch(1, 2, 1 << 20)] == [1, 2]  # count binds first


def test_batch_entries_carry_kind_and_term(EntryLog):
    log = EntryLog()
    log.append([LogEntry(1, 1, EntryKind.NOOP, b""), LogEntry(2, 2, EntryKind.CONFIG, b"cfg")])
    assert log.batch(1, 5, 100) == log.entries(1, 2)


# ---------------------------------------------------------------- MemoryLog


def test_memory_log_is_a_raft_log():
    assert isinstance(MemoryLog(), RaftLog)


def test_memory_log_starts_empty():
    log = MemoryLog()
    assert log.last_index() == 0 and log.last_term() == 0 and log.term_at(0) == 0
    assert log.hard_state() == HardState()
    assert log.snapshot_index() == 0
    assert log.snapshot().index == 0 and log.snapshot().term == 0


def test_memory_log_hard_state_roundtrip():
    log = MemoryLog()
    log.set_hard_state(HardState(3, 2))
    log.sync()
    assert log.hard_state() == HardState(3, 2)


def test_memory_log_append_truncate_validation():
    log = MemoryLog()
    with pytest.raises(ValueError):
        log.append([e(1, 2)])
    log.append([e(1, 1), e(2, 2), e(2, 3)])
    log.truncate(3)
    assert log.last_index() == 2
    assert log.entries(1, 2) == [e(1, 1), e(2, 2)]


def test_memory_log_apply_snapshot_keeps_matching_suffix():
    log = MemoryLog()
    log.append([e(1, 1), e(1, 2), e(2, 3)])
    snap = Snapshot(2, 1, Membership.of([1, 2, 3]), b"state")
    log.apply_snapshot(snap)
    assert log.snapshot() == snap and log.snapshot_index() == 2
    assert log.term_at(2) == 1 and log.term_at(1) is None
    assert log.entries(3, 3) == [e(2, 3)]


def test_memory_log_apply_snapshot_discards_conflicting_log():
    log = MemoryLog()
    log.append([e(1, 1), e(1, 2), e(2, 3)])
    log.apply_snapshot(Snapshot(5, 3, Membership.of([1]), b""))
    assert log.last_index() == 5 and log.last_term() == 3 and log.term_at(3) is None


def test_memory_log_refuses_an_older_snapshot():
    log = MemoryLog()
    log.apply_snapshot(Snapshot(5, 3, Membership.of([1]), b""))
    with pytest.raises(ValueError):
        log.apply_snapshot(Snapshot(4, 3, Membership.of([1]), b""))
    assert log.snapshot_index() == 5


def test_memory_log_batch_delegates_byte_limit():
    log = MemoryLog()
    log.append([e(1, 1, b"x" * 50), e(1, 2, b"y" * 50)])
    assert [x.index for x in log.batch(1, 10, 60)] == [1]
    assert [x.index for x in log.batch(1, 10, 100)] == [1, 2]


# ---------------------------------------------------------------- EntryBatch, slices, bulk writes


def test_batch_is_a_sequence_of_log_entries(EntryLog):
    log = filled(EntryLog, [1, 1, 2, 2, 3], offset=10, offset_term=1)
    batch = log.batch(12, 10, 1 << 20)
    expected = log.entries(12, 15)
    assert len(batch) == 4 and list(batch) == expected and batch == expected
    assert batch[0] == expected[0] and batch[-1] == expected[-1]
    assert batch[1:3] == expected[1:3]
    assert list(batch[1:3]) == expected[1:3]
    assert [e.index for e in batch[2:]] == [14, 15]
    assert len(batch[3:1]) == 0
    with pytest.raises(IndexError):
        batch[4]
    with pytest.raises(IndexError):
        batch[-5]


def test_batch_columns_and_bounds():
    from raftfast.log._entries_py import EntryBatch

    log = _entries_py.EntryLog()
    log.append([e(1, 1, b"a"), LogEntry(2, 2, EntryKind.CONFIG, b"cfg"), e(2, 3, b"c")])
    batch = log.batch(1, 10, 100)
    assert isinstance(batch, EntryBatch)
    assert (batch.first_index, batch.last_index) == (1, 3)
    assert batch.terms == [1, 2, 2]
    assert batch.kinds == bytes([0, 1, 0])
    assert batch.commands == [b"a", b"cfg", b"c"]
    with pytest.raises(ValueError):
        batch[::2]
    with pytest.raises(ValueError):
        EntryBatch(1, [1, 1], b"\x00", [b"a", b"b"])


def test_append_accepts_a_batch_from_another_log(EntryLog):
    leader = filled(EntryLog, [1, 1, 2, 2])
    follower = filled(EntryLog, [1])
    follower.append(leader.batch(2, 10, 1 << 20))
    assert follower.entries(1, 4) == leader.entries(1, 4)
    assert follower.payload_bytes == leader.payload_bytes
    follower.append(leader.batch(5, 10, 1 << 20))  # an empty batch is a no-op
    assert follower.last_index() == 4


def test_append_batch_validates_all_or_nothing(EntryLog):
    source = filled(EntryLog, [1, 1, 2])
    log = filled(EntryLog, [1])
    with pytest.raises(ValueError):
        log.append(source.batch(3, 10, 1 << 20))  # starts at 3, we need 2
    high = filled(EntryLog, [3])
    with pytest.raises(ValueError):
        high.append(source.batch(2, 10, 1 << 20))  # terms 1, 2 below our last term 3
    assert log.last_index() == 1 and high.last_index() == 1


def test_append_rejects_an_invalid_kind(EntryLog):
    log = EntryLog()
    with pytest.raises(ValueError):
        log.append([LogEntry(1, 1, 7, b"x")])
    assert log.last_index() == 0


def test_append_commands_rejects_non_bytes_all_or_nothing(EntryLog):
    log = EntryLog()
    with pytest.raises(TypeError):
        log.append_commands(1, 0, [b"ok", "text"])
    assert log.last_index() == 0 and log.payload_bytes == 0


def test_slices_are_parallel_columns(EntryLog):
    log = EntryLog()
    log.append([e(1, 1, b"a"), LogEntry(1, 2, EntryKind.NOOP, b""), e(2, 3, b"c")])
    terms, kinds, commands = log.slices(2, 3)
    assert list(terms) == [1, 2] and list(kinds) == [2, 0] and list(commands) == [b"", b"c"]
    terms, kinds, commands = log.slices(3, 2)
    assert len(terms) == len(kinds) == len(commands) == 0
    with pytest.raises(IndexError):
        log.slices(0, 1)
    with pytest.raises(IndexError):
        log.slices(2, 4)


def test_extend_raw_checks_column_lengths(EntryLog):
    log = EntryLog()
    log.extend_raw([1, 1], b"\x00\x02", [b"a", b""])
    assert log.entries(1, 2) == [e(1, 1, b"a"), LogEntry(1, 2, EntryKind.NOOP, b"")]
    with pytest.raises(ValueError):
        log.extend_raw([1], b"\x00\x00", [b"a", b"b"])
    assert log.last_index() == 2 and log.payload_bytes == 1


def test_collect_applies_yields_only_normal_entries(EntryLog):
    log = EntryLog(3, 1)
    log.append([
        LogEntry(1, 4, EntryKind.NOOP, b""),
        e(1, 5, b"a"),
        LogEntry(2, 6, EntryKind.CONFIG, b"cfg"),
        e(2, 7, b"b"),
    ])
    out = ["keep"]
    log.collect_applies(4, 7, out, lambda i, t, c: (i, t, c))
    assert out == ["keep", (5, 1, b"a"), (7, 2, b"b")]
    out = []
    log.collect_applies(6, 5, out, lambda *a: a)
    assert out == []
    with pytest.raises(IndexError):
        log.collect_applies(3, 4, [], lambda *a: a)  # 3 is compacted
    with pytest.raises(IndexError):
        log.collect_applies(5, 8, [], lambda *a: a)
