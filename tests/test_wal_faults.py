"""WalLog under faults: crashes at every step, power loss, torn and corrupt files, I/O errors.

The rule checked throughout: recovery gives back a state the log really passed through, at or
after its last durable point (the last `sync()` or `apply_snapshot()` that returned), and it
refuses, naming the file and offset, to open a log whose synced data is damaged.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import struct

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftfast import EntryKind, HardState, LogEntry, Membership, Snapshot
from raftfast.errors import StorageError
from raftfast.wal import WalLog
from raftfast.wal import format as fmt
from raftfast.wal.faults import FaultyIO, SimulatedCrash
from raftfast.wal.recovery import load
from raftfast.wal.segment import Scan, segment_name
from raftfast.wal.snapshots import snapshot_name
from wal_workload import DURABLE_OPS, apply, state, workload

SMALL = 4096
MODES = ("keep", "drop", "torn")
MAGIC_1 = fmt.segment_magic(fmt.segment_seed(1))  # the records' magic in segment 1


def open_log(path, io=None, segment_bytes=SMALL):
    return WalLog.open(path, segment_bytes=segment_bytes, io=io if io is not None else FaultyIO())


def run_until_crash(path, ops, io):
    """Run `ops` on a WalLog over `io` until it crashes; (ops completed, ops durable)."""
    done = durable = 0
    try:
        log = open_log(path, io)
        for op in ops:
            apply(log, op)
            done += 1
            if op[0] in DURABLE_OPS:
                durable = done
        log.close()
        durable = done
    except SimulatedCrash:
        pass
    return done, durable


def check_recovery(path, states, done, durable):
    """Recover `path`: its state must be one the model passed through between the durable
    point and the op in flight; and the repaired log must take new writes and read them back."""
    allowed = states[durable : done + 2]
    with open_log(path) as log:
        got = state(log)
        assert got in allowed, f"recovered a state the log never had (done {done}, durable {durable})"
        log.append_commands(max(log.last_term(), 1), 0, [b"after the crash"])
        log.sync()
        expected = state(log)
    with open_log(path) as log:
        assert state(log) == expected


def records(path, name):
    """[(offset, end)] of the records in segment `name`."""
    return [(off, end) for off, _, _, _, end in Scan((path / name).read_bytes())]


def damage(path, name, offset, data):
    with open(path / name, "r+b") as f:
        f.seek(offset)
        f.write(data)


def flip(path, name, offset, bit=0):
    data = (path / name).read_bytes()
    damage(path, name, offset, bytes([data[offset] ^ (1 << bit)]))


def entries(first, n, term=1, size=40):
    return [LogEntry(term, i, EntryKind.NORMAL, bytes([i % 251]) * size) for i in range(first, first + n)]


# ---------------------------------------------------------------- crashes at every step


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_a_crash_at_every_step_recovers_a_state_at_or_after_the_last_sync(tmp_path, seed, mode):
    """Covers rotation (small segments), truncation and compaction (snapshots) in the
    workload: every file operation is a crash point, and each crash model is tried."""
    ops, states = workload(seed, 60)
    dry = FaultyIO()
    run_until_crash(tmp_path / "dry", ops, dry)
    assert dry.steps > 50
    for crash_at in range(1, dry.steps + 1):
        path = tmp_path / f"crash{crash_at}"
        io = FaultyIO(crash_at=crash_at)
        done, durable = run_until_crash(path, ops, io)
        io.crash(mode, random.Random(crash_at))
        check_recovery(path, states, done, durable)
        shutil.rmtree(path)


def test_a_crash_during_recovery_then_recovery_again(tmp_path):
    """Recovery is idempotent: crash it at each of its own steps, then recover again."""
    ops, states = workload(7, 45)
    dry = FaultyIO()
    run_until_crash(tmp_path / "dry", ops, dry)
    images = 0
    for crash_at in range(1, dry.steps + 1):
        image = tmp_path / "image"
        io = FaultyIO(crash_at=crash_at)
        done, durable = run_until_crash(image, ops, io)
        io.crash("torn", random.Random(crash_at))
        if not image.exists():
            continue
        rec = load(str(image), FaultyIO())
        if rec.torn is None and rec.pending_snapshot is None and not rec.obsolete:
            shutil.rmtree(image)
            continue
        images += 1
        counting = FaultyIO()
        shutil.copytree(image, tmp_path / "count")
        open_log(tmp_path / "count", counting).close()
        shutil.rmtree(tmp_path / "count")
        for again_at in range(1, counting.steps + 1):
            path = tmp_path / f"again{again_at}"
            shutil.copytree(image, path)
            io = FaultyIO(crash_at=again_at)
            with pytest.raises(SimulatedCrash):
                open_log(path, io).close()
            io.crash("torn", random.Random(again_at))
            check_recovery(path, states, done, durable)
            shutil.rmtree(path)
        shutil.rmtree(image)
        if images == 6:
            break
    assert images == 6


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), where=st.floats(0, 1), mode=st.sampled_from(MODES))
def test_any_crash_point_recovers_a_prefix_holding_every_synced_write(tmp_path_factory, seed, where, mode):
    ops, states = workload(seed, 30, big=2000)
    base = tmp_path_factory.mktemp("prop")
    dry = FaultyIO()
    run_until_crash(base / "dry", ops, dry)
    io = FaultyIO(crash_at=1 + int(where * (dry.steps - 1)))
    done, durable = run_until_crash(base / "wal", ops, io)
    io.crash(mode, random.Random(seed))
    check_recovery(base / "wal", states, done, durable)


def test_a_crash_before_fsync_loses_only_the_unsynced_suffix(tmp_path):
    for mode in MODES:
        path = tmp_path / mode
        io = FaultyIO()
        log = open_log(path, io)
        log.append(entries(1, 10))
        log.set_hard_state(HardState(2, 1))
        log.sync()
        synced = state(log)
        log.append(entries(11, 10, term=2))
        log.set_hard_state(HardState(3, None))
        io.crash(mode, random.Random(0))
        with open_log(path) as log:
            assert state(log) == synced


def test_writes_past_the_buffer_reach_the_file_before_sync(tmp_path):
    """A process crash (page cache kept) keeps unsynced records that were already written out:
    recovery returns them, a later state than the last sync, which is allowed."""
    io = FaultyIO()
    log = open_log(tmp_path, io, segment_bytes=8 << 20)
    log.append(entries(1, 5))
    log.sync()
    log.append(entries(6, 3000, size=400))  # > 1 MiB: written out before any sync
    io.crash("keep")
    with open_log(tmp_path, segment_bytes=8 << 20) as log:
        assert log.last_index() == 3005


# ---------------------------------------------------------------- torn and garbage tails


def test_a_torn_last_record_at_every_byte_offset(tmp_path):
    src = tmp_path / "src"
    log = open_log(src, segment_bytes=1 << 16)
    log.append(entries(1, 5))
    log.sync()
    before = state(log)
    log.append([LogEntry(1, 6, EntryKind.NOOP), LogEntry(2, 7, EntryKind.CONFIG, b"cfg"), LogEntry(2, 8, EntryKind.NORMAL, b"x" * 30)])
    log.sync()
    after = state(log)
    log.close()
    name = segment_name(1)
    start, end = records(src, name)[-1]
    data = (src / name).read_bytes()
    rng = random.Random(1)
    for cut in range(start, end + 1):
        for filler in (bytes(end - cut), rng.randbytes(end - cut)):
            path = tmp_path / "torn"
            path.mkdir()
            (path / name).write_bytes(data[:cut] + filler + data[end:])
            with open_log(path, segment_bytes=1 << 16) as log:
                assert state(log) == (after if cut == end else before), f"cut at {cut}"
            shutil.rmtree(path)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(lambda rng: rng.randbytes(700), id="garbage"),
        pytest.param(lambda rng: bytes(300) + rng.randbytes(100), id="zeros-then-garbage"),
        pytest.param(lambda rng: MAGIC_1 + rng.randbytes(60), id="a-record-start-then-garbage"),
        pytest.param(lambda rng: bytes(20), id="zero-filled"),
    ],
)
def test_a_damaged_tail_is_discarded(tmp_path, tail):
    log = open_log(tmp_path)
    log.append(entries(1, 20))
    log.sync()
    expected = state(log)
    log.close()
    name = segment_name(1)
    end = records(tmp_path, name)[-1][1]
    damage(tmp_path, name, end, tail(random.Random(3)))
    with open_log(tmp_path) as log:
        assert state(log) == expected
    with open_log(tmp_path) as log:  # recovering again changes nothing
        assert state(log) == expected
        log.append(entries(21, 3))  # and new records go where the damage was
        expected = state(log)
    with open_log(tmp_path) as log:
        assert state(log) == expected


# ---------------------------------------------------------------- corruption of synced data


@pytest.mark.parametrize("field", ["magic", "crc", "size", "synced", "type", "payload"])
def test_a_bit_flip_in_a_synced_record_refuses_to_open(tmp_path, field):
    log = open_log(tmp_path, segment_bytes=1 << 16)
    for i in range(5):
        log.append(entries(1 + 10 * i, 10))
        log.sync()
    log.close()
    name = segment_name(1)
    start, end = records(tmp_path, name)[2]
    where = {"magic": 1, "crc": 5, "size": 9, "synced": 13, "type": 20, "payload": end - start - 3}[field]
    flip(tmp_path, name, start + where, bit=3)
    with pytest.raises(StorageError) as error:
        open_log(tmp_path, segment_bytes=1 << 16)
    assert error.value.context.endswith(name)
    assert error.value.detail.startswith(f"offset {start}:")


def test_a_bit_flip_in_a_sealed_segment_refuses_to_open(tmp_path):
    log = open_log(tmp_path)
    for i in range(40):
        log.append(entries(1 + 5 * i, 5, size=60))
    log.close()
    name = segment_name(2)
    start, end = records(tmp_path, name)[1]
    flip(tmp_path, name, end - 1)
    with pytest.raises(StorageError, match="sealed") as error:
        open_log(tmp_path)
    assert error.value.context.endswith(name) and f"offset {start}:" in error.value.detail


def test_a_bit_flip_in_the_newest_record_reads_as_a_torn_write(tmp_path):
    """The known limit: nothing written after the newest record vouches that it was synced,
    so damage to it cannot be told from a torn write, and it is discarded (docs/wal.md)."""
    log = open_log(tmp_path, segment_bytes=1 << 16)
    log.append(entries(1, 10))
    log.sync()
    log.append(entries(11, 10))
    log.sync()
    log.close()
    name = segment_name(1)
    start, end = records(tmp_path, name)[-1]
    flip(tmp_path, name, end - 1)
    with open_log(tmp_path, segment_bytes=1 << 16) as log:
        assert log.last_index() == 10


def build_segments(path, n_records=80):
    log = open_log(path)
    for i in range(n_records):
        log.append(entries(1 + 5 * i, 5, size=60))
    log.close()
    names = sorted(p.name for p in path.iterdir() if p.suffix == ".wal")
    assert len(names) >= 5
    return names


def test_a_missing_middle_segment_refuses_to_open(tmp_path):
    names = build_segments(tmp_path)
    (tmp_path / names[2]).unlink()
    with pytest.raises(StorageError, match="missing"):
        open_log(tmp_path)


def test_a_missing_first_segment_refuses_to_open(tmp_path):
    names = build_segments(tmp_path)
    (tmp_path / names[0]).unlink()
    with pytest.raises(StorageError, match="missing"):
        open_log(tmp_path)


def test_reordered_segments_refuse_to_open(tmp_path):
    names = build_segments(tmp_path)
    a, b = tmp_path / names[1], tmp_path / names[2]
    a.rename(tmp_path / "swap")
    b.rename(a)
    (tmp_path / "swap").rename(b)
    with pytest.raises(StorageError, match="reordered"):
        open_log(tmp_path)


def test_a_shortened_sealed_segment_refuses_to_open(tmp_path):
    names = build_segments(tmp_path)
    start, end = records(tmp_path, names[1])[-1]
    damage(tmp_path, names[1], start, bytes(end - start))
    with pytest.raises(StorageError, match=f"offset {start}: the records stop at zeros, in a sealed segment whose records run to {end}") as error:
        open_log(tmp_path)
    assert error.value.context.endswith(names[1])


def test_a_gap_left_by_an_interrupted_compaction_is_finished(tmp_path):
    names = build_segments(tmp_path)
    with open_log(tmp_path) as log:
        log.apply_snapshot(Snapshot(150, 1, Membership.of([1])))
        expected = state(log)
    kept = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".wal")
    # Put back one covered segment that compaction deleted, leaving a gap before the live ones.
    covered = [n for n in names if n not in kept]
    assert len(covered) >= 2
    (tmp_path / covered[0]).write_bytes(b"stale")
    with open_log(tmp_path) as log:
        assert state(log) == expected
    assert not (tmp_path / covered[0]).exists()


def test_leftover_temp_files_are_removed(tmp_path):
    with open_log(tmp_path) as log:
        log.append(entries(1, 10))
        expected = state(log)
    (tmp_path / (segment_name(2) + ".tmp")).write_bytes(b"half a segment")
    (tmp_path / (snapshot_name(9) + ".tmp")).write_bytes(b"half a snapshot")
    with open_log(tmp_path) as log:
        assert state(log) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK", segment_name(1)]


# ---------------------------------------------------------------- snapshots and the log


def test_a_snapshot_whose_record_never_landed_is_installed_by_recovery(tmp_path):
    io = FaultyIO()
    log = open_log(tmp_path, io)
    log.append(entries(1, 30))
    log.sync()
    snapshot = Snapshot(20, 1, Membership.of([1, 2, 3]), b"app state")
    # apply_snapshot's steps on a synced log: create, pwrite x2, fsync, rename, fsync_dir
    # (the file is durable), then the record's pwrite: crash right there.
    io.crash_at = io.steps + 7
    with pytest.raises(SimulatedCrash):
        log.apply_snapshot(snapshot)
    io.crash("drop")
    assert load(str(tmp_path), FaultyIO()).pending_snapshot == (20, 1, True)
    with open_log(tmp_path) as log:
        assert log.snapshot() == snapshot and log.last_index() == 30 and log.term_at(20) == 1
    assert load(str(tmp_path), FaultyIO()).pending_snapshot is None


def test_a_missing_snapshot_file_refuses_to_open(tmp_path):
    with open_log(tmp_path) as log:
        log.append(entries(1, 30))
        log.apply_snapshot(Snapshot(20, 1, Membership.of([1])))
    (tmp_path / snapshot_name(20)).unlink()
    with pytest.raises(StorageError, match="snapshot at index 20"):
        open_log(tmp_path)


def test_a_corrupt_snapshot_file_refuses_to_open(tmp_path):
    with open_log(tmp_path) as log:
        log.append(entries(1, 30))
        log.apply_snapshot(Snapshot(20, 1, Membership.of([1]), b"data" * 10))
    flip(tmp_path, snapshot_name(20), 60)
    with pytest.raises(StorageError, match="checksum") as error:
        open_log(tmp_path)
    assert error.value.context.endswith(snapshot_name(20))


def test_snapshots_without_segments_refuse_to_open(tmp_path):
    with open_log(tmp_path) as log:
        log.apply_snapshot(Snapshot(5, 1, Membership.of([1])))
    (tmp_path / segment_name(1)).unlink()
    with pytest.raises(StorageError, match="no log segments"):
        open_log(tmp_path)


# ---------------------------------------------------------------- I/O errors are fail-stop


def assert_dead(log, io):
    steps = io.steps
    for call in (log.sync, log.last_index, lambda: log.term_at(1), lambda: log.entries(1, 1), log.hard_state,
                 lambda: log.append(entries(log_last + 1, 1)), lambda: log.set_hard_state(HardState(9, None))):
        with pytest.raises(StorageError):
            call()
    assert io.steps == steps, "a failed log touched the disk again"
    log.close()  # still releases the files and the lock, without raising


log_last = 10


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_write_is_fail_stop(tmp_path, code):
    io = FaultyIO()
    log = open_log(tmp_path, io)
    log.append(entries(1, log_last))
    log.sync()
    synced = state(log)
    io.fail("pwrite", code, path_contains="segment-")
    log.append(entries(log_last + 1, 3))
    with pytest.raises(StorageError, match=os.strerror(code)):
        log.sync()
    assert_dead(log, io)
    io.crash("drop")
    with open_log(tmp_path) as log:
        assert state(log) == synced


def test_a_failed_fsync_is_never_retried(tmp_path):
    io = FaultyIO()
    log = open_log(tmp_path, io)
    log.append(entries(1, log_last))
    log.sync()
    synced = state(log)
    io.fail("fdatasync", errno.EIO)
    log.append(entries(log_last + 1, 3))
    with pytest.raises(StorageError, match="sync failed"):
        log.sync()
    assert_dead(log, io)
    io.crash("drop")  # the data the failed fsync was for may or may not be there: here, not
    with open_log(tmp_path) as log:
        assert state(log) == synced


def test_enospc_while_preallocating_a_segment(tmp_path):
    io = FaultyIO()
    log = open_log(tmp_path, io)
    log.append(entries(1, 5))
    log.sync()
    synced = state(log)
    io.fail("pwrite", errno.ENOSPC, path_contains=".wal.tmp")
    with pytest.raises(StorageError, match="No space"):
        for i in range(100):  # until a rotation needs a new segment
            log.append(entries(6 + 5 * i, 5, size=100))
    assert_dead(log, io)
    io.crash("drop")
    with open_log(tmp_path) as log:
        assert state(log)[:6] == synced[:6] and log.last_index() >= 5
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_enospc_while_writing_a_snapshot(tmp_path):
    io = FaultyIO()
    log = open_log(tmp_path, io)
    log.append(entries(1, 20))
    log.sync()
    synced = state(log)
    io.fail("pwrite", errno.ENOSPC, path_contains=".snap")
    with pytest.raises(StorageError, match="No space"):
        log.apply_snapshot(Snapshot(10, 1, Membership.of([1]), b"x" * 100))
    assert_dead(log, io)
    io.crash("drop")
    with open_log(tmp_path) as log:
        assert state(log) == synced


def test_an_unreadable_segment_fails_open_and_releases_the_lock(tmp_path):
    with open_log(tmp_path) as log:
        log.append(entries(1, 5))
    io = FaultyIO()
    io.fail("read", errno.EIO, path_contains="segment-")
    with pytest.raises(StorageError, match="cannot read"):
        open_log(tmp_path, io)
    with open_log(tmp_path) as log:
        assert log.last_index() == 5


# ---------------------------------------------------------------- insane lengths


def test_an_insane_length_at_the_tail_is_a_torn_write(tmp_path):
    with open_log(tmp_path) as log:
        log.append(entries(1, 5))
        expected = state(log)
    name = segment_name(1)
    end = records(tmp_path, name)[-1][1]
    damage(tmp_path, name, end, MAGIC_1 + struct.pack("<IIQB", 0, 0xFFFFFFFF, 0, fmt.APPEND))
    with open_log(tmp_path) as log:
        assert state(log) == expected


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(struct.pack("<QII", 6, 0xFFFFFFFF, 1) + struct.pack("<QBI", 1, 0, 0xFFFFFFFF), id="count"),
        pytest.param(struct.pack("<QII", 6, 2, 0xFFFFFFFF), id="runs"),
        pytest.param(struct.pack("<QII", 6, 1, 1) + struct.pack("<QBI", 1, 0, 1) + struct.pack("<I", 0xFFFFFFF0) + b"x", id="entry-length"),
        pytest.param(struct.pack("<QII", 6, 1, 1) + struct.pack("<QBI", 1, 9, 1) + struct.pack("<I", 1) + b"x", id="kind"),
        pytest.param(struct.pack("<QII", 9, 1, 1) + struct.pack("<QBI", 1, 0, 1) + struct.pack("<I", 1) + b"x", id="index-gap"),
    ],
)
def test_a_checksummed_record_with_insane_contents_refuses_to_open(tmp_path, payload):
    """A valid checksum over nonsense is no torn write: it is corruption wherever it sits."""
    with open_log(tmp_path) as log:
        log.append(entries(1, 5))
    name = segment_name(1)
    end = records(tmp_path, name)[-1][1]
    damage(tmp_path, name, end, fmt.frame(fmt.APPEND, end, payload, fmt.segment_seed(1)))
    with pytest.raises(StorageError) as error:
        open_log(tmp_path)
    assert error.value.context.endswith(name) and error.value.detail.startswith(f"offset {end}:")


def test_a_snapshot_file_with_insane_lengths_refuses_to_open(tmp_path):
    with open_log(tmp_path) as log:
        log.append(entries(1, 5))
        log.apply_snapshot(Snapshot(3, 1, Membership.of([1]), b"data"))
    damage(tmp_path, snapshot_name(3), 12 + 16 + 4, struct.pack("<Q", 1 << 60))
    with pytest.raises(StorageError, match="bytes follow"):
        open_log(tmp_path)


# ---------------------------------------------------------------- recycled files and format versions


def test_records_written_before_a_torn_one_are_zeroed_and_never_come_back(tmp_path):
    """A torn record B followed by a valid record C of the same segment (both unsynced: the
    disk wrote C's page but not all of B's). Recovery ends the log before B; C must go too,
    or a new record exactly as long as B would bring C back as if it followed it."""
    log = open_log(tmp_path, segment_bytes=1 << 16)
    log.append(entries(1, 5))
    log.sync()
    before = state(log)
    log.append(entries(6, 3))  # B
    log.append(entries(9, 2))  # C, written with B before any sync: it vouches for nothing
    log.sync()
    log.close()
    name = segment_name(1)
    (b_start, b_end), (c_start, c_end) = records(tmp_path, name)[-2:]
    flip(tmp_path, name, b_end - 1)
    rec = load(str(tmp_path), FaultyIO())
    assert rec.torn == (b_start, c_end)
    with open_log(tmp_path, segment_bytes=1 << 16) as log:
        assert state(log) == before
        log.append(entries(6, 3, term=2))  # as long as B: ends where C began
        log.sync()
        expected = state(log)
    assert records(tmp_path, name)[-1] == (b_start, b_end)
    with open_log(tmp_path, segment_bytes=1 << 16) as log:
        assert state(log) == expected and log.last_index() == 8


def test_a_sealed_segment_may_end_in_what_its_file_held_before(tmp_path):
    """A recycled file keeps its earlier life after the records: a sealed segment is read up to
    where the next segment's header says its records end, whatever follows."""
    names = build_segments(tmp_path)
    with open_log(tmp_path) as log:
        expected = state(log)
    end = records(tmp_path, names[1])[-1][1]
    size = (tmp_path / names[1]).stat().st_size
    stale = (tmp_path / names[3]).read_bytes()  # real records, of another segment's seed
    damage(tmp_path, names[1], end, stale[: size - end])
    with open_log(tmp_path) as log:
        assert state(log) == expected


def test_a_record_of_another_segment_is_not_read_as_this_ones(tmp_path):
    """The checksums are seeded with the segment number: a record copied from another
    segment, where this segment's records end, is not taken for one of its own."""
    names = build_segments(tmp_path)
    with open_log(tmp_path) as log:
        expected = state(log)
        last = log.last_index()
    last_name = names[-1]
    end = records(tmp_path, last_name)[-1][1]
    # a record of segment 1 that would continue the log if its checksum were not seeded
    frame = fmt.frame(fmt.APPEND, 0, struct.pack("<QII", last + 1, 1, 1) + struct.pack("<QBI", 1, 0, 1)
                      + struct.pack("<I", 1) + b"x", fmt.segment_seed(1))
    damage(tmp_path, last_name, end, frame)
    with open_log(tmp_path) as log:
        assert state(log) == expected


def write_version_1(path, monkeypatch, n=40):
    """A log written the way version 1 wrote it: checksums not seeded."""
    with monkeypatch.context() as m:
        m.setattr(fmt, "VERSION", 1)
        m.setattr(fmt, "segment_seed", lambda seq, version=1: 0)
        log = open_log(path)
        for i in range(n):
            log.append(entries(1 + 5 * i, 5, size=60))
        log.close()


def test_a_version_1_log_is_read_and_written_on(tmp_path, monkeypatch):
    write_version_1(tmp_path, monkeypatch)
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".wal")
    assert all(Scan((tmp_path / n).read_bytes()).seed == 0 for n in names)
    with open_log(tmp_path) as log:
        assert log.last_index() == 200
        log.append(entries(201, 2, size=60))  # into the version 1 segment, as version 1
        log.sync()
    assert Scan((tmp_path / names[-1]).read_bytes()).seed == 0
    assert records(tmp_path, names[-1])[-1][1] > records(tmp_path, names[-1])[0][1]
    with open_log(tmp_path) as log:
        assert log.last_index() == 202
        for i in range(20):  # on into new segments, of version 2
            log.append(entries(203 + 5 * i, 5, size=60))
        expected = state(log)
    newest = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".wal")[-1]
    assert Scan((tmp_path / newest).read_bytes()).seed == fmt.segment_seed(int(newest[8:28])) != 0
    with open_log(tmp_path) as log:
        assert state(log) == expected


def test_an_unknown_segment_version_refuses_to_open(tmp_path):
    with open_log(tmp_path) as log:
        log.append(entries(1, 5))
    name = segment_name(1)
    data = bytearray((tmp_path / name).read_bytes())
    body = bytes(data[8 : fmt.FRAME_SIZE]) + struct.pack("<H", 3) + bytes(data[fmt.FRAME_SIZE + 2 : records(tmp_path, name)[0][1]])
    seed = fmt.segment_seed(1, 3)
    damage(tmp_path, name, 0, fmt.PREFIX.pack(fmt.segment_magic(seed), crc32c.crc32c(body, seed)) + body)
    with pytest.raises(StorageError, match="version 3"):
        open_log(tmp_path)


def test_the_search_beyond_the_tail_skips_what_a_recycled_file_held(tmp_path):
    """The last segment's leftovers from its earlier life carry another magic: recovery's
    search for records of its own beyond the tail does not even checksum them."""
    names = build_segments(tmp_path)
    last = names[-1]
    end = records(tmp_path, last)[-1][1]
    size = (tmp_path / last).stat().st_size
    stale = b"".join(fmt.frame(fmt.APPEND, 0, b"x" * 40, fmt.segment_seed(1)) for _ in range(size // 60))
    damage(tmp_path, last, end, stale[: size - end])
    calls = []
    real = crc32c.crc32c

    def counting(data, value=0):
        calls.append(len(data))
        return real(data, value)

    import raftfast.wal.segment as segment_module

    segment_module.crc32c.crc32c, saved = counting, segment_module.crc32c.crc32c
    try:
        scan = Scan((tmp_path / last).read_bytes())
        list(scan)
        before = len(calls)
        assert scan.records_after(scan.end) == (None, scan.end)
        assert len(calls) == before
    finally:
        segment_module.crc32c.crc32c = saved
    with open_log(tmp_path) as log:
        assert log.last_index() == 400
