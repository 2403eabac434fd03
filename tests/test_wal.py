"""WalLog without faults: it behaves exactly like MemoryLog, reopens to the same state, and its
extra paths (EntryBatch, append_commands, split records, rotation, compaction) hold up."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raftfast import Action, EntryKind, Event, HardState, LogEntry, MemoryLog, Membership, RaftConfig, RaftLog, Snapshot
from raftfast.errors import StorageError
from raftfast.messages import RequestVote, RequestVoteReply
from raftfast.node import RaftNode
from raftfast.wal import FileIO, WalLog
from raftfast.wal import format as fmt
from raftfast.wal import wal as wal_module
from raftfast.wal.faults import FaultyIO
from raftfast.wal.segment import RECYCLED_PREFIX, Scan, segment_name
from raftfast.wal.snapshots import parse_snapshot_name
from wal_workload import apply, state, workload

SMALL = 4096  # small segments, so a short workload rotates often
REPO = Path(__file__).resolve().parents[1]


def open_log(path, **kw):
    return WalLog.open(path, segment_bytes=kw.pop("segment_bytes", SMALL), io=kw.pop("io", FaultyIO()), **kw)


def segments(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".wal"))


@pytest.mark.parametrize("seed", range(6))
def test_matches_memorylog_and_reopens_to_the_same_state(tmp_path, seed):
    ops, states = workload(seed, 120)
    log = open_log(tmp_path)
    for k, op in enumerate(ops):
        apply(log, op)
        assert state(log) == states[k + 1], f"after op {k}: {op[0]}"
        if k % 30 == 29:  # reopen now and then: recovery mid-way must continue seamlessly
            log.close()
            log = open_log(tmp_path)
            assert state(log) == states[k + 1]
    log.close()
    with open_log(tmp_path) as again:
        assert state(again) == states[-1]
    assert len(segments(tmp_path)) >= 1


def test_is_a_raftlog_and_reads_stay_in_memory(tmp_path):
    log = open_log(tmp_path)
    assert isinstance(log, RaftLog)
    log.append([LogEntry(1, i, EntryKind.NORMAL, b"x") for i in range(1, 11)])
    log.sync()

    def no_disk(*args):
        raise AssertionError("a read touched the disk")

    io = log._io
    io.read = io.pwrite = io.create = io.open_rw = no_disk
    assert log.term_at(0) == 0 and log.term_at(5) == 1 and log.term_at(11) is None
    assert log.entry(3).command == b"x"
    assert len(log.entries(1, 10)) == 10
    assert len(log.batch(1, 4, 1 << 20)) == 4
    assert log.slices(1, 2)[0] == [1, 1]
    assert log.last_index() == 10 and log.last_term() == 1


def test_errors_match_memorylog_and_write_nothing(tmp_path):
    wal, mem = open_log(tmp_path), MemoryLog()
    for log in (wal, mem):
        log.append([LogEntry(2, i) for i in range(1, 6)])
        log.apply_snapshot(Snapshot(2, 2, Membership.of([1])))
    bad = [
        ("append", [LogEntry(2, 7)]),  # gap
        ("append", [LogEntry(1, 6)]),  # term below the last
        ("append", [LogEntry(2, 6), LogEntry(2, 8)]),  # hole inside the batch
        ("append", [LogEntry(3, 6), LogEntry(2, 7)]),  # terms going down
        ("truncate", 2),  # at the snapshot
        ("snapshot", Snapshot(1, 2, Membership.of([1]))),  # older snapshot
        ("append_commands", (1, 0, [b"a"])),  # term below the last
    ]
    for op in bad:
        with pytest.raises(ValueError) as wal_error:
            apply(wal, op)
        with pytest.raises(ValueError) as mem_error:
            apply(mem, op)
        assert str(wal_error.value) == str(mem_error.value)
    with pytest.raises(ValueError, match="kind"):
        wal.append_commands(2, 7, [b"a"])
    with pytest.raises(TypeError):
        wal.append_commands(2, 0, [bytearray(b"a")])
    apply(wal, ("truncate", 9))  # past the end: a no-op, as in MemoryLog
    assert state(wal) == state(mem)
    wal.close()
    with open_log(tmp_path) as again:
        assert state(again) == state(mem)


def test_commands_over_the_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_ENTRY_BYTES", 100)
    with open_log(tmp_path) as log:
        with pytest.raises(ValueError, match="limit"):
            log.append([LogEntry(1, 1, EntryKind.NORMAL, bytes(101))])
        assert log.last_index() == 0


def test_an_append_too_big_for_one_record_is_split(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_PAYLOAD", 1000)
    entries = [LogEntry(1 + i // 40, i + 1, EntryKind(i % 3), bytes([i % 256]) * (i % 90)) for i in range(200)]
    with open_log(tmp_path) as log:
        log.append(entries)
    with open_log(tmp_path) as log:
        assert log.entries(1, 200) == entries


def test_rotation_and_compaction_delete_only_covered_segments(tmp_path):
    log = open_log(tmp_path)
    for i in range(1, 201):
        log.append_commands(1, 0, [bytes(100)])
    log.sync()
    before = segments(tmp_path)
    assert len(before) > 3
    log.apply_snapshot(Snapshot(150, 1, Membership.of([1, 2, 3]), b"state"))
    after = segments(tmp_path)
    assert len(after) < len(before) and after[-1] == before[-1]
    assert [e.index for e in log.entries(151, 200)] == list(range(151, 201))
    log.close()
    with open_log(tmp_path) as again:
        assert again.snapshot_index() == 150 and again.last_index() == 200
        assert again.snapshot().data == b"state"
    snaps = [n for n in os.listdir(tmp_path) if n.endswith(".snap")]
    assert snaps == ["snapshot-00000000000000000150.snap"]


def test_a_discarding_snapshot_then_new_entries(tmp_path):
    with open_log(tmp_path) as log:
        log.append([LogEntry(1, i) for i in range(1, 6)])
        log.apply_snapshot(Snapshot(9, 3, Membership.of([1])))  # a leader's snapshot past our log
        assert log.last_index() == 9 and log.term_at(9) == 3
        log.append([LogEntry(3, 10, EntryKind.NORMAL, b"after")])
    with open_log(tmp_path) as log:
        assert log.last_index() == 10 and log.entry(10).command == b"after" and log.term_at(5) is None


def test_hard_state_survives_reopen_and_equal_writes_cost_nothing(tmp_path):
    io = FaultyIO()
    with open_log(tmp_path, io=io) as log:
        log.set_hard_state(HardState(4, 2))
        log.sync()
        steps = io.steps
        log.set_hard_state(HardState(4, 2))
        log.sync()
        assert io.steps == steps
    with open_log(tmp_path) as log:
        assert log.hard_state() == HardState(4, 2)


def test_a_second_open_is_refused_in_this_process_and_another(tmp_path):
    log = WalLog.open(tmp_path)
    with pytest.raises(StorageError, match="already open"):
        WalLog.open(tmp_path)
    code = "import sys; from raftfast.wal import WalLog\ntry:\n WalLog.open(sys.argv[1])\nexcept Exception as e:\n print(type(e).__name__, e)"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.startswith("StorageError") and "already open" in out.stdout
    log.close()
    WalLog.open(tmp_path).close()


def test_closed_log_refuses_calls(tmp_path):
    log = open_log(tmp_path)
    log.close()
    log.close()  # closing twice is harmless
    for call in (log.sync, log.last_index, lambda: log.term_at(0), log.hard_state):
        with pytest.raises(StorageError, match="closed"):
            call()


def test_segment_size_is_checked(tmp_path):
    with pytest.raises(ValueError, match="segment_bytes"):
        WalLog.open(tmp_path, segment_bytes=100)


def test_raft_node_votes_once_per_term_across_a_crash(tmp_path):
    """Hard-state durability as the protocol sees it: a vote granted, a crash that keeps only
    what was synced, and the restarted node refuses a second candidate in the same term."""
    config = RaftConfig(1, peers=(2, 3))
    io = FaultyIO()
    node = RaftNode(config, log=WalLog.open(tmp_path, io=io))
    granted = [a.message for a in node.step(Event.Message(RequestVote(5, 2, 0, 0))) if isinstance(a, Action.Send)]
    assert granted == [RequestVoteReply(5, True, 1)]
    io.crash("drop")  # power cut right after the reply went out
    node = RaftNode(config, log=WalLog.open(tmp_path))
    assert node.term == 5
    replies = [a.message for a in node.step(Event.Message(RequestVote(5, 3, 0, 0))) if isinstance(a, Action.Send)]
    assert replies == [RequestVoteReply(5, False, 1)]
    node.log.close()


def test_raft_node_runs_on_a_wallog_and_recovers_its_log(tmp_path):
    config = RaftConfig.single(1)
    node = RaftNode(config, log=WalLog.open(tmp_path))
    for _ in range(50):
        node.step(Event.Tick())
        if node.is_leader():
            break
    assert node.is_leader()
    applied = []
    for i in range(20):
        applied += [a.command for a in node.step(Event.Propose(b"cmd%d" % i)) if isinstance(a, Action.Apply)]
    assert applied == [b"cmd%d" % i for i in range(20)]
    term, last = node.term, node.log.last_index()
    node.log.close()
    restarted = RaftNode(config, log=WalLog.open(tmp_path))
    assert restarted.term == term and restarted.log.last_index() == last
    assert [e.command for e in restarted.log.entries(last - 19, last)] == [b"cmd%d" % i for i in range(20)]
    restarted.log.close()


def test_names_are_stable(tmp_path):
    with open_log(tmp_path):
        pass
    assert segments(tmp_path) == [segment_name(1)]


def test_the_next_segment_is_zero_filled_in_the_background(tmp_path):
    spare_seen = False
    log = WalLog.open(tmp_path, segment_bytes=64 << 10)
    while len(segments(tmp_path)) < 5:
        log.append_commands(1, 0, [bytes(100)] * 20)
        log.sync()
        spare_seen |= any(n.endswith(".wal.tmp") for n in os.listdir(tmp_path))
    expected = state(log)
    log.close()
    assert spare_seen
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")], "close left the spare behind"
    with WalLog.open(tmp_path, segment_bytes=64 << 10) as again:
        assert state(again) == expected


def test_past_its_first_segment_the_log_prepares_the_next_one_at_its_first_write(tmp_path):
    """While segments double, a spare started at half full was not ready when the segment
    filled: the rotation waited for it (20-90 ms, growing, at 80k writes/s)."""
    with WalLog.open(tmp_path, segment_bytes=1 << 30) as log:
        while len(segments(tmp_path)) < 2:
            log.append_commands(1, 0, [bytes(1000)] * 64)
            log.sync()
        log._drop_spare()  # whatever was prepared for segment 2: look only at what comes next
        log.append_commands(1, 0, [bytes(100)])
        log.sync()  # a first small write into segment 2, far below half of its 2 MiB
        # the spare's thread creates the file: give it a moment (a whole segment's worth, at most)
        wait_for(lambda: os.path.exists(tmp_path / (segment_name(3) + ".tmp")), timeout=2.0)


class ZeroFillIO(FileIO):
    """Real files, with new segments zero-filled, not allocated: the path of a file system
    without fallocate (and of FaultyIO)."""

    allocates = False


class RecordedRests(threading.Event):
    """A stop event that records each rest instead of taking it, and is set at the `stop_at`th."""

    def __init__(self, stop_at=0):
        super().__init__()
        self.rests = []
        self.stop_at = stop_at

    def wait(self, timeout=None):
        self.rests.append(timeout)
        if len(self.rests) == self.stop_at:
            self.set()
        return self.is_set()


def test_a_spare_is_zero_filled_at_a_pace_in_the_background(tmp_path):
    """In the background, the zero-fill rests after each piece as long as it took, so it takes
    at most half of the disk's time; on the caller's thread it runs flat out."""
    from raftfast.wal import segment

    stop = RecordedRests()
    assert segment.prepare_segment(ZeroFillIO(), str(tmp_path), 7, 3 << 20, stop) == 3 << 20
    assert len(stop.rests) == 3 and all(r >= 0 for r in stop.rests)
    assert segment.prepare_segment(ZeroFillIO(), str(tmp_path), 8, 3 << 20) == 3 << 20
    assert os.path.getsize(tmp_path / (segment_name(7) + ".tmp")) == 3 << 20


def test_a_stopped_spare_ends_at_a_piece_boundary_with_what_it_zeroed(tmp_path):
    from raftfast.wal import segment

    stop = RecordedRests(stop_at=2)
    assert segment.prepare_segment(ZeroFillIO(), str(tmp_path), 7, 5 << 20, stop) == 2 << 20
    assert os.path.getsize(tmp_path / (segment_name(7) + ".tmp")) == 2 << 20


class SlowSpareIO(ZeroFillIO):
    """Real files, but the spare's background zero-fill is slow (`delay` s per 1 MiB write), as
    on a disk shared by three busy nodes. It logs the writes into temp files and the renames,
    in order, so a test can see what was written after a temp file became a segment."""

    def __init__(self, delay):
        self.delay = delay
        self.slow_fds = set()
        self.paths = {}
        self.events = []

    def create(self, path):
        fd = super().create(path)
        self.paths[fd] = path
        if path.endswith(".wal.tmp") and threading.current_thread() is not threading.main_thread():
            self.slow_fds.add(fd)
        return fd

    def open_rw(self, path):
        fd = super().open_rw(path)
        self.paths[fd] = path
        return fd

    def close(self, fd):
        self.slow_fds.discard(fd)
        self.paths.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd, data, offset):
        if fd in self.slow_fds:
            time.sleep(self.delay)
        super().pwrite(fd, data, offset)
        if self.paths.get(fd, "").endswith(".tmp"):
            self.events.append(("pwrite", self.paths[fd]))

    def rename(self, src, dst):
        super().rename(src, dst)
        self.events.append(("rename", src))


class Writer:
    """Appends distinct 1000-byte commands and syncs, remembering what it wrote."""

    def __init__(self, log):
        self.log = log
        self.commands = []

    def write(self, n=64, size=1000):
        first = len(self.commands) + 1
        batch = [i.to_bytes(8, "little") * (size // 8) for i in range(first, first + n)]
        began = time.monotonic()
        self.log.append_commands(1, 0, batch)
        self.log.sync()
        self.commands += batch
        return time.monotonic() - began

    def check(self, log=None):
        log = log or self.log
        assert log.last_index() == len(self.commands)
        assert [e.command for e in log.entries(1, log.last_index())] == self.commands


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def tmp_size(path, seq):
    try:
        return os.path.getsize(path / (segment_name(seq) + ".tmp"))
    except FileNotFoundError:
        return 0


def start_a_slow_spare(tmp_path, io):
    """A log in segment 2 whose spare for segment 3 (4 MiB, about 2 s at SlowSpareIO(0.25)'s
    pace) has zeroed its first 1 MiB."""
    writer = Writer(WalLog.open(tmp_path, segment_bytes=8 << 20, io=io))
    while len(segments(tmp_path)) < 2:
        writer.write()
    wait_for(lambda: tmp_size(tmp_path, 3) >= 1 << 20)
    return writer


def test_a_late_spare_is_cut_short_not_waited_for(tmp_path):
    """At 200k writes/s the 64 MiB spare was not ready when the 32 MiB segment filled, and the
    rotation waited for it for 0.2-0.3 s, past the election timeout. It stops the spare at its
    next piece instead and installs the zeros there are, then carries on as usual."""
    io = SlowSpareIO(delay=0.25)
    writer = start_a_slow_spare(tmp_path, io)
    rotation = 0.0
    while len(segments(tmp_path)) < 3:
        rotation = writer.write()
    assert rotation < 0.5, f"the rotation took {rotation:.2f} s: it waited for the spare"
    cut = os.path.getsize(tmp_path / segment_name(3))
    assert 1 << 20 <= cut < 4 << 20 and cut % (1 << 20) == 0
    writer.check()

    # The next spare doubles the planned 4 MiB, not the cut size: a late spare does not make
    # every later segment small.
    io.delay = 0
    writer.write()
    wait_for(lambda: tmp_size(tmp_path, 4) == 8 << 20)
    while len(segments(tmp_path)) < 4:
        writer.write()
    assert os.path.getsize(tmp_path / segment_name(3)) == cut, "records were written past the cut segment's end"
    writer.check()
    writer.log.close()

    # Recovery reads a short segment between full ones, and the log goes on from there.
    with WalLog.open(tmp_path, segment_bytes=8 << 20) as log:
        writer.check(log)
        writer.log = log
        while len(segments(tmp_path)) < 5:
            writer.write(n=256)
        writer.check()
    with WalLog.open(tmp_path, segment_bytes=8 << 20) as log:
        writer.check(log)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_spare_too_short_for_the_record_is_replaced_by_a_whole_segment(tmp_path):
    """A record larger than what the late spare zeroed needs a new segment made on the spot,
    of the planned size, as when there is no spare."""
    io = SlowSpareIO(delay=0.25)
    writer = start_a_slow_spare(tmp_path, io)
    rotation = writer.write(n=3, size=1 << 20)  # one 3 MiB record: more than the spare has
    assert len(segments(tmp_path)) == 3
    assert rotation < 1.0, f"the rotation took {rotation:.2f} s: it waited for the spare"
    assert os.path.getsize(tmp_path / segment_name(3)) == 4 << 20
    writer.write()
    writer.check()
    writer.log.close()
    with WalLog.open(tmp_path, segment_bytes=8 << 20) as log:
        writer.check(log)


def test_a_segment_made_on_the_spot_is_no_larger_than_the_record_needs(tmp_path, monkeypatch):
    """Zeroing a whole planned segment in the writer's thread is the stall the spare exists to
    avoid: past a few MiB (here lowered to 2 MiB) a segment made on the spot holds the record
    and little more."""
    monkeypatch.setattr(wal_module, "_ON_THE_SPOT_BYTES", 2 << 20)
    io = SlowSpareIO(delay=0.25)
    writer = start_a_slow_spare(tmp_path, io)
    writer.write(n=3, size=1 << 20)  # one 3 MiB record: more than the spare has, less than 4 MiB
    made = os.path.getsize(tmp_path / segment_name(3))
    assert 3 << 20 < made < (3 << 20) + 4096, made  # the record and its headers, not the planned 4 MiB
    writer.write()  # the segment is full: on to the next one
    assert len(segments(tmp_path)) == 4
    writer.check()
    writer.log.close()
    with WalLog.open(tmp_path, segment_bytes=8 << 20) as log:
        writer.check(log)


def test_a_stopped_spare_writes_nothing_once_it_is_a_segment(tmp_path):
    """The spare's thread is joined before its file is installed: no zeros land on records."""
    io = SlowSpareIO(delay=0.25)
    writer = start_a_slow_spare(tmp_path, io)
    while len(segments(tmp_path)) < 3:
        writer.write()
    installed = os.path.getsize(tmp_path / segment_name(3))
    time.sleep(0.6)  # time for two more pieces, were the thread still running
    temp = str(tmp_path / (segment_name(3) + ".tmp"))
    after = io.events[io.events.index(("rename", temp)) + 1 :]
    assert ("pwrite", temp) not in after
    assert os.path.getsize(tmp_path / segment_name(3)) == installed
    writer.write()
    writer.log.close()
    with WalLog.open(tmp_path, segment_bytes=8 << 20) as log:
        writer.check(log)


def test_close_stops_a_spare_rather_than_waiting_for_it(tmp_path):
    """Close deletes the spare anyway: waiting for the rest of its zeros only delays it."""
    writer = start_a_slow_spare(tmp_path, SlowSpareIO(delay=0.25))
    began = time.monotonic()
    writer.log.close()
    closing = time.monotonic() - began
    assert closing < 0.5, f"close took {closing:.2f} s: it waited for the spare"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    with WalLog.open(tmp_path, segment_bytes=8 << 20) as log:
        writer.check(log)


class SegmentTempIO(FileIO):
    """Real files; `temp_fds` are the open descriptors of new segments' temp files."""

    def __init__(self):
        self.temp_fds = set()

    def create(self, path):
        fd = super().create(path)
        if path.endswith(".wal.tmp"):
            self.temp_fds.add(fd)
        return fd

    def close(self, fd):
        self.temp_fds.discard(fd)
        super().close(fd)


class NoSpaceForNewSegments(SegmentTempIO):
    """Real files, zero-filled segments, but writing a new segment's temp file fails with
    ENOSPC (on the spare's background thread, since FileIO allows threads)."""

    allocates = False

    def pwrite(self, fd, data, offset):
        if fd in self.temp_fds:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "segment temp file")
        super().pwrite(fd, data, offset)


def test_a_failed_background_preparation_is_fail_stop_at_rotation(tmp_path):
    WalLog.open(tmp_path, segment_bytes=64 << 10).close()
    log = WalLog.open(tmp_path, segment_bytes=64 << 10, io=NoSpaceForNewSegments())
    synced = 0
    with pytest.raises(StorageError, match="No space"):
        for _ in range(1000):
            log.append_commands(1, 0, [bytes(100)] * 20)
            log.sync()
            synced = log.last_index()
    with pytest.raises(StorageError, match="No space"):
        log.last_index()
    log.close()
    with WalLog.open(tmp_path, segment_bytes=64 << 10) as again:
        assert again.last_index() >= synced > 0
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


class AllocatingIO(SegmentTempIO):
    """Real files; counts what goes into new segments' temp files, and can make `allocate`
    fail with `errno`."""

    def __init__(self, errno_=None):
        super().__init__()
        self.errno = errno_
        self.allocated = []
        self.zero_writes = 0

    def allocate(self, fd, size):
        if self.errno is not None:
            raise OSError(self.errno, os.strerror(self.errno), "segment temp file")
        self.allocated.append(size)
        super().allocate(fd, size)

    def pwrite(self, fd, data, offset):
        if fd in self.temp_fds and not bytes(data).strip(b"\0"):
            self.zero_writes += 1
        super().pwrite(fd, data, offset)


MIB = 1 << 20


def grow(log, path, count):
    """Append 1 MiB at a time until the log has `count` segments: 1, 2, 4, 8 MiB, then 16."""
    while len(segments(path)) < count:
        log.append_commands(1, 0, [b"x" * (64 << 10)] * 16)
        log.sync()


@pytest.mark.skipif(not FileIO.allocates, reason="no posix_fallocate here")
def test_segments_above_4_mib_are_allocated_not_zero_filled(tmp_path):
    """No zeros to write back: the spare is ready at once, and reads as zeros. The small first
    segments are still zero-filled, for the cheaper fdatasync of written blocks."""
    io = AllocatingIO()
    log = WalLog.open(tmp_path, segment_bytes=16 * MIB, io=io)
    grow(log, tmp_path, 5)
    expected = state(log)
    log.close()
    sizes = [os.path.getsize(tmp_path / n) for n in segments(tmp_path)]
    assert io.allocated == [n for n in sizes if n > 4 * MIB] + [16 * MIB]  # and the spare's
    assert io.zero_writes >= sum(n // MIB for n in sizes if n <= 4 * MIB)  # one write per MiB at least
    newest = tmp_path / segments(tmp_path)[-1]
    assert os.path.getsize(newest) in io.allocated
    scan = Scan(newest.read_bytes())
    list(scan)
    assert scan.failure is None and scan.nonzero_end() == scan.end  # zeros after the records
    with WalLog.open(tmp_path, segment_bytes=16 * MIB) as again:
        assert state(again) == expected


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EINVAL])
def test_a_file_system_without_fallocate_gets_zeros_written(tmp_path, code):
    io = AllocatingIO(code)
    io.allocates = True
    log = WalLog.open(tmp_path, segment_bytes=16 * MIB, io=io)
    grow(log, tmp_path, 5)
    expected = state(log)
    log.close()
    assert io.zero_writes > 7 and not io.allocated  # the 8 and 16 MiB ones too
    with WalLog.open(tmp_path, segment_bytes=16 * MIB) as again:
        assert state(again) == expected


def test_no_space_to_allocate_a_segment_is_fail_stop(tmp_path):
    io = AllocatingIO(errno.ENOSPC)
    io.allocates = True
    log = WalLog.open(tmp_path, segment_bytes=16 * MIB, io=io)
    synced = 0
    with pytest.raises(StorageError, match="No space"):
        for _ in range(64):
            log.append_commands(1, 0, [b"x" * (64 << 10)] * 16)
            log.sync()
            synced = log.last_index()
    log.close()
    with WalLog.open(tmp_path, segment_bytes=16 * MIB) as again:
        assert again.last_index() >= synced > 0


def test_fileio_pwrite_finishes_a_short_write(tmp_path, monkeypatch):
    """os.pwrite may write less than asked: FileIO.pwrite goes on from where it stopped."""
    real = os.pwrite
    calls = []

    def short(fd, data, offset):
        calls.append(len(data))
        return real(fd, bytes(data)[:3], offset)

    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        monkeypatch.setattr(os, "pwrite", short)
        FileIO().pwrite(fd, b"abcdefgh", 2)
        monkeypatch.setattr(os, "pwrite", real)
        assert calls == [8, 5, 2]
        assert os.pread(fd, 16, 0) == b"\0\0abcdefgh"
    finally:
        os.close(fd)


# -- snapshots written in the background -------------------------------------------------------


class GatedSnapshotIO(FileIO):
    """Real files, but the snapshot files whose indexes are `hold()`-en wait after their first
    write (the head) until `release()`d, as if the disk were slow: the temp file is left partly
    written meanwhile. With `fail`, that write raises EIO instead."""

    def __init__(self):
        self.held = set()
        self.started = set()  # the indexes whose snapshot file's head is written
        self.cond = threading.Condition()
        self.fail = False
        self.snap_fds = {}

    def hold(self, *indexes):
        with self.cond:
            self.held.update(indexes)

    def release(self, *indexes):
        with self.cond:
            self.held.difference_update(indexes)
            self.cond.notify_all()

    def create(self, path):
        fd = super().create(path)
        if path.endswith(".snap.tmp"):
            self.snap_fds[fd] = parse_snapshot_name(os.path.basename(path)[: -len(".tmp")])
        return fd

    def close(self, fd):
        self.snap_fds.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd, data, offset):
        index = self.snap_fds.get(fd)
        if index is not None:
            if self.fail:
                raise OSError(errno.EIO, os.strerror(errno.EIO), "snapshot temp file")
            if offset > 0:
                with self.cond:
                    self.started.add(index)
                    assert self.cond.wait_for(lambda: index not in self.held, 5), "never released"
        super().pwrite(fd, data, offset)


def snap(index, data=None):
    return Snapshot(index, 1, Membership.of([1, 2, 3]), data if data is not None else b"state %d" % index)


def command(i):
    return b"%05d" % i * 20


def snapshot_threads_done():
    return not [t for t in threading.enumerate() if t.name.startswith("wal-snapshot")]


def recycled_files(path):
    return sorted(n for n in os.listdir(path) if n.startswith(RECYCLED_PREFIX))


def waiting(path):
    """The one covered segment waiting to be recycled."""
    names = recycled_files(path)
    assert len(names) == 1, names
    return path / names[0]


def deletions_done():
    """Compaction deletes the covered files on a background thread: whether it is done."""
    return not [t for t in threading.enumerate() if t.name == "wal-delete"]


def snapshot_files(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".snap"))


def reopened(path, copy):
    """(snapshot index, snapshot data, last index) of the log in a copy of `path`, after
    checking its entries are the ones written."""
    import shutil

    shutil.copytree(path, copy)
    os.unlink(copy / "LOCK")
    with WalLog.open(copy, segment_bytes=SMALL) as log:
        s = log.snapshot()
        first = s.index + 1
        assert [e.command for e in log.entries(first, log.last_index())] == [command(i) for i in range(first, log.last_index() + 1)]
        assert log.term_at(s.index) == 1
        result = (s.index, s.data, log.last_index())
    assert not [n for n in os.listdir(copy) if n.endswith(".tmp") and not n.startswith(RECYCLED_PREFIX)]
    return result


def a_log_with_a_snapshot(tmp_path, io):
    log = WalLog.open(tmp_path, segment_bytes=SMALL, io=io)
    for i in range(1, 201):
        log.append_commands(1, 0, [command(i)])
    log.apply_snapshot(snap(50))
    wait_for(snapshot_threads_done)
    log.sync()  # writes its record, syncs, compacts
    wait_for(deletions_done)
    assert snapshot_files(tmp_path) == ["snapshot-00000000000000000050.snap"]
    return log


def test_an_own_snapshot_is_written_in_the_background_and_compacts_once_durable(tmp_path):
    """Writing the snapshot file (8.5 MB and its fsyncs) in the event loop's turn took 80-170 ms
    under load, near the election timeout. apply_snapshot now returns at once; the record and
    the compaction follow the file, and a crash at any stage recovers a consistent log."""
    io = GatedSnapshotIO()
    log = a_log_with_a_snapshot(tmp_path, io)
    before = segments(tmp_path)
    assert len(before) > 3

    io.hold(150)
    began = time.monotonic()
    log.apply_snapshot(snap(150))
    took = time.monotonic() - began
    assert took < 0.5, f"apply_snapshot took {took:.2f} s: it waited for the snapshot file"
    assert log.snapshot_index() == 150 and log.snapshot().data == b"state 150"
    assert log.term_at(149) is None and log.term_at(150) == 1
    assert [e.command for e in log.entries(151, 200)] == [command(i) for i in range(151, 201)]
    with pytest.raises(ValueError):
        log.truncate(150)

    # Mid-write: a partial temp file, the old snapshot and every segment.
    wait_for(lambda: 150 in io.started)
    assert segments(tmp_path) == before
    assert reopened(tmp_path, tmp_path / "mid-write") == (50, b"state 50", 200)

    # Written, no record yet: recovery finishes the install from the log.
    io.release(150)
    wait_for(lambda: "snapshot-00000000000000000150.snap" in os.listdir(tmp_path))
    wait_for(snapshot_threads_done)
    assert segments(tmp_path) == before
    assert reopened(tmp_path, tmp_path / "written") == (150, b"state 150", 200)

    # The next write buffers the record; nothing is deleted until a sync makes it durable.
    log.append_commands(1, 0, [command(201)])
    log.flush()
    assert segments(tmp_path) == before
    assert reopened(tmp_path, tmp_path / "record-written") == (150, b"state 150", 201)
    log.sync()
    wait_for(deletions_done)
    after = segments(tmp_path)
    assert len(after) < len(before) and after[-1] == before[-1]
    assert snapshot_files(tmp_path) == ["snapshot-00000000000000000150.snap"]
    assert reopened(tmp_path, tmp_path / "compacted") == (150, b"state 150", 201)
    log.close()
    assert reopened(tmp_path, tmp_path / "closed") == (150, b"state 150", 201)


def test_a_background_snapshot_record_is_written_by_the_owner_not_the_sync_thread(tmp_path):
    """sync_flushed runs in the runtime's fsync thread: it writes no record and deletes
    nothing; the owner's next call compacts once that fsync covered the record."""
    io = GatedSnapshotIO()
    log = a_log_with_a_snapshot(tmp_path, io)
    before = segments(tmp_path)
    log.apply_snapshot(snap(150))
    wait_for(snapshot_threads_done)
    log.flush()  # the record, written to the file
    worker = threading.Thread(target=log.sync_flushed)
    worker.start()
    worker.join()
    assert segments(tmp_path) == before
    log.flush()  # finds the record durable
    wait_for(deletions_done)
    assert len(segments(tmp_path)) < len(before)
    log.close()
    assert reopened(tmp_path, tmp_path / "copy") == (150, b"state 150", 200)


def test_a_failed_background_snapshot_write_is_fail_stop_and_loses_nothing(tmp_path):
    io = GatedSnapshotIO()
    log = a_log_with_a_snapshot(tmp_path, io)
    io.fail = True
    log.apply_snapshot(snap(150))  # returns: the write fails on its thread
    wait_for(snapshot_threads_done)
    with pytest.raises(StorageError, match="snapshot failed .*Input/output error"):
        log.append_commands(1, 0, [command(201)])
    with pytest.raises(StorageError):
        log.sync()
    with pytest.raises(StorageError):
        log.last_index()
    log.close()
    assert reopened(tmp_path, tmp_path / "copy") == (50, b"state 50", 200)


def test_close_finishes_a_pending_snapshot_write(tmp_path):
    io = GatedSnapshotIO()
    log = a_log_with_a_snapshot(tmp_path, io)
    io.hold(150)
    log.apply_snapshot(snap(150))
    wait_for(lambda: 150 in io.started)
    threading.Timer(0.2, io.release, (150,)).start()
    log.close()
    assert snapshot_files(tmp_path) == ["snapshot-00000000000000000150.snap"]
    assert reopened(tmp_path, tmp_path / "copy") == (150, b"state 150", 200)


def test_a_second_snapshot_finishes_the_pending_one_first(tmp_path):
    io = GatedSnapshotIO()
    log = a_log_with_a_snapshot(tmp_path, io)
    io.hold(100, 150)
    log.apply_snapshot(snap(100))
    wait_for(lambda: 100 in io.started)
    threading.Timer(0.2, io.release, (100,)).start()
    log.apply_snapshot(snap(150))  # waits for the first, and logs it: the second is held
    wait_for(deletions_done)
    assert snapshot_files(tmp_path) == ["snapshot-00000000000000000100.snap"]
    wait_for(lambda: 150 in io.started)
    assert reopened(tmp_path, tmp_path / "between") == (100, b"state 100", 200)
    threading.Timer(0.2, io.release, (150,)).start()
    log.close()
    assert snapshot_files(tmp_path) == ["snapshot-00000000000000000150.snap"]
    assert reopened(tmp_path, tmp_path / "copy") == (150, b"state 150", 200)


def test_a_leaders_snapshot_is_installed_synchronously(tmp_path):
    io = GatedSnapshotIO()
    log = a_log_with_a_snapshot(tmp_path, io)
    log.apply_snapshot(Snapshot(300, 2, Membership.of([1, 2, 3]), b"leader"))
    assert snapshot_threads_done()
    wait_for(deletions_done)
    assert snapshot_files(tmp_path) == ["snapshot-00000000000000000300.snap"]
    assert log.last_index() == 300
    log.close()


class GatedUnlinkIO(FileIO):
    """Real files, but after deleting its first segment, deletion waits for `gate`: a
    compaction caught halfway, as by a crash while unlinking 64 MiB segments (70-130 ms each
    under load, dropping their page cache and freeing their blocks)."""

    def __init__(self):
        self.gate = threading.Event()
        self.deleted = 0

    def unlink(self, path):
        if path.endswith(".wal") and self.deleted:
            self.gate.wait()
        super().unlink(path)
        if path.endswith(".wal"):
            self.deleted += 1  # after the unlink: a test that sees the count sees the file gone


def test_compaction_deletes_the_covered_files_in_the_background_oldest_first(tmp_path):
    io = GatedUnlinkIO()
    log = WalLog.open(tmp_path, segment_bytes=SMALL, io=io)
    for i in range(1, 201):
        log.append_commands(1, 0, [command(i)])
    log.sync()
    before = segments(tmp_path)
    log.apply_snapshot(snap(150))
    wait_for(snapshot_threads_done)
    log.sync()  # the snapshot's record durable: compacts, without waiting for the deletions
    assert not io.gate.is_set()
    # Halfway, what is left is the newest segments: a crash here recovers the log. (The
    # oldest was renamed to be recycled, the next deleted.)
    wait_for(lambda: io.deleted == 1)
    left = segments(tmp_path)
    assert len(left) == len(before) - 2 and left == before[2:]
    assert waiting(tmp_path).stat().st_size == SMALL
    assert reopened(tmp_path, tmp_path / "halfway") == (150, b"state 150", 200)
    io.gate.set()
    wait_for(deletions_done)
    assert len(segments(tmp_path)) < len(left)
    log.append_commands(1, 0, [command(201)])
    log.close()
    assert reopened(tmp_path, tmp_path / "closed") == (150, b"state 150", 201)


# ---------------------------------------------------------------- recycled segments


def test_a_covered_full_size_segment_is_recycled_as_a_later_one(tmp_path):
    """Compaction keeps one covered segment of the full size and the next spare is that file
    (same inode), not a new zero-filled one; what it held before fails the new segment's
    seeded checksums, so reopening reads exactly the records written since."""
    log = WalLog.open(tmp_path, segment_bytes=SMALL)
    for i in range(1, 201):
        log.append_commands(1, 0, [command(i)])
    log.sync()
    first = segment_name(1)
    inode = (tmp_path / first).stat().st_ino
    log.apply_snapshot(snap(150))
    wait_for(snapshot_threads_done)
    log.sync()
    wait_for(deletions_done)
    assert not (tmp_path / first).exists()
    assert waiting(tmp_path).stat().st_ino == inode
    # The spare being made when compaction ran is zero-filled; the one after is the file.
    def installed():
        return [n for n in segments(tmp_path) if (tmp_path / n).stat().st_ino == inode]

    i = 201
    while not installed():
        log.append_commands(1, 0, [command(i)])
        log.sync()
        i += 1
        assert i < 400, "the recycled segment was never used"
    recycled = tmp_path / installed()[0]
    assert not recycled_files(tmp_path)
    log.append_commands(1, 0, [command(i)])  # one record into the recycled file: the rest is its old life
    log.close()
    scan = Scan(recycled.read_bytes())
    types = [rtype for _, rtype, *_ in scan]
    assert types[0] == fmt.HEADER and types[1:] == [fmt.APPEND] * (len(types) - 1) and len(types) >= 2
    assert scan.failure is not None and scan.nonzero_end() > scan.end  # old records follow, rejected
    assert reopened(tmp_path, tmp_path / "copy") == (150, b"state 150", i)


def test_only_one_recycled_segment_waits_and_others_are_deleted(tmp_path):
    log = WalLog.open(tmp_path, segment_bytes=SMALL)
    for i in range(1, 201):
        log.append_commands(1, 0, [command(i)])
    log.sync()
    before = segments(tmp_path)
    log.apply_snapshot(snap(190))
    wait_for(snapshot_threads_done)
    log.sync()
    wait_for(deletions_done)
    left = segments(tmp_path)
    assert len(before) - len(left) >= 3
    spare = segment_name(int(left[-1][8:28]) + 1) + ".tmp"  # the spare being zero-filled
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".tmp")) == sorted([waiting(tmp_path).name, spare])
    log.close()


def test_the_largest_covered_segment_waits_and_is_used_once_half_the_planned_size(tmp_path):
    """Segments double from 1 MiB up to `segment_bytes`. The largest covered one is recycled
    (a larger one replaces it); a spare takes it if it is at least half the planned size, and
    the segment is then as large as the file. (FaultyIO: spares made whole, at once.)"""
    mib = 1 << 20
    log = WalLog.open(tmp_path, segment_bytes=16 * mib, io=FaultyIO())
    inodes = {}
    i = 0

    def write_until(seq):
        nonlocal i
        while segment_name(seq) not in segments(tmp_path):
            i += 1
            log.append_commands(1, 0, [bytes(64 << 10)])
            log.sync()
        inodes.clear()  # inode numbers of deleted files are reused: only the live ones
        inodes.update({(tmp_path / n).stat().st_ino: n for n in segments(tmp_path)})

    def compact_below(seq):
        log.apply_snapshot(snap(i))
        wait_for(snapshot_threads_done)
        log.append_commands(1, 0, [b"x"])
        log.sync()
        wait_for(deletions_done)
        assert segments(tmp_path)[0] == segment_name(seq)

    write_until(3)  # 1 (1 MiB), 2 (2 MiB), 3 (4 MiB)
    compact_below(3)
    recycled = waiting(tmp_path).stat()
    assert inodes[recycled.st_ino] == segment_name(2) and recycled.st_size == 2 * mib
    write_until(6)  # 4 (8 MiB), 5 and 6 (16 MiB): 2 MiB is too small for their spares
    assert waiting(tmp_path).stat().st_ino == recycled.st_ino
    compact_below(6)  # covers 3, 4 and 5: 5 replaces the smaller file
    recycled = waiting(tmp_path).stat()
    assert inodes[recycled.st_ino] == segment_name(5) and recycled.st_size == 16 * mib
    write_until(8)  # 7's spare was made before; 8's is the file
    assert (tmp_path / segment_name(8)).stat().st_ino == recycled.st_ino
    assert not recycled_files(tmp_path)
    expected = log.last_index()
    log.close()
    with WalLog.open(tmp_path, segment_bytes=16 * mib) as log:
        assert log.last_index() == expected


def test_recovery_deletes_a_waiting_recycled_segment(tmp_path):
    log = WalLog.open(tmp_path, segment_bytes=SMALL)
    for i in range(1, 201):
        log.append_commands(1, 0, [command(i)])
    log.apply_snapshot(snap(150))
    log.close()
    assert recycled_files(tmp_path)
    with WalLog.open(tmp_path, segment_bytes=SMALL) as log:
        assert not recycled_files(tmp_path)
        assert log.snapshot_index() == 150 and log.last_index() == 200


class CountingIO(FileIO):
    """Real files; records each snapshot temp file's writes and syncs, in order."""

    def __init__(self):
        self.fds = {}
        self.calls = []

    def create(self, path):
        fd = super().create(path)
        if path.endswith(".snap.tmp"):
            self.fds[fd] = path
        return fd

    def pwrite(self, fd, data, offset):
        if fd in self.fds:
            self.calls.append(("pwrite", offset, len(data)))
        super().pwrite(fd, data, offset)

    def fdatasync(self, fd):
        if fd in self.fds:
            self.calls.append(("fdatasync",))
        super().fdatasync(fd)

    def fsync(self, fd):
        if fd in self.fds:
            self.calls.append(("fsync",))
        super().fsync(fd)


@pytest.mark.parametrize("background", [False, True])
def test_a_large_snapshot_file_is_written_in_synced_pieces(tmp_path, background):
    """1 MiB at a time, each synced before the next, so the disk never holds megabytes of it in
    front of the log's fdatasyncs (nor anyone else's on a shared disk)."""
    io = CountingIO()
    log = WalLog.open(tmp_path, segment_bytes=SMALL, io=io)
    for i in range(1, 11):
        log.append_commands(1, 0, [command(i)])
    log.sync()
    data = bytes(range(256)) * (10 << 10)  # 2.5 MiB
    if background:
        log.apply_snapshot(snap(8, data))
        wait_for(snapshot_threads_done)
    else:
        log.apply_snapshot(Snapshot(8, 2, Membership.of([1, 2, 3]), data))  # a leader's: synchronous
        assert snapshot_files(tmp_path) == ["snapshot-00000000000000000008.snap"]
    log.close()
    pieces = [c for c in io.calls if c[0] == "pwrite"][1:]  # after the header
    assert [n for _, _, n in pieces] == [1 << 20, 1 << 20, len(data) - (2 << 20)]
    assert [c[0] for c in io.calls[1:]] == ["pwrite", "fdatasync", "pwrite", "fdatasync", "pwrite", "fsync"]
    with WalLog.open(tmp_path, segment_bytes=SMALL) as log:
        assert log.snapshot().data == data and log.snapshot_index() == 8
