"""`raftfast wal inspect DIR`: it lists files and records, verifies checksums, and says
whether the log would open."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from raftfast import EntryKind, HardState, LogEntry, Membership, Snapshot
from raftfast.wal import WalLog
from raftfast.wal import format as fmt
from raftfast.wal.inspect import main
from raftfast.wal.segment import Scan
from raftfast.wal.snapshots import snapshot_name


def build(path):
    with WalLog.open(path, segment_bytes=4096) as log:
        for i in range(30):
            log.append([LogEntry(1, 1 + 5 * i + k, EntryKind.NORMAL, b"x" * 60) for k in range(5)])
            log.sync()
        log.set_hard_state(HardState(3, 2))
        log.truncate(150)
        log.apply_snapshot(Snapshot(100, 1, Membership.of([1, 2, 3], [4]), b"app"))


def test_a_healthy_log_is_described_record_by_record(tmp_path, capsys):
    build(tmp_path)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert snapshot_name(100) in out and "voters [1, 2, 3] learners [4]" in out and "checksum ok" in out
    for word in ("HEADER", "APPEND", "HARD_STATE", "TRUNCATE", "SNAPSHOT", "zeros after (checksums ok)"):
        assert word in out
    assert "snapshot 100/1, entries 101..149 (49), term 3 vote 2" in out


def test_quiet_leaves_out_the_records(tmp_path, capsys):
    build(tmp_path)
    assert main(["--quiet", str(tmp_path)]) == 0
    assert "@" not in capsys.readouterr().out


def test_a_torn_tail_is_reported_but_not_an_error(tmp_path, capsys):
    build(tmp_path)
    last = sorted(p for p in tmp_path.iterdir() if p.suffix == ".wal")[-1]
    data = bytearray(last.read_bytes())
    scan = Scan(bytes(data))
    list(scan)
    data[scan.end : scan.end + 40] = scan.magic + bytes(range(36))  # a header claiming ~117 MB
    last.write_bytes(bytes(data))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "runs past" in out and "DAMAGED" not in out


def test_records_after_a_torn_one_are_reported_as_zeroed_on_open(tmp_path, capsys):
    with WalLog.open(tmp_path, segment_bytes=1 << 16) as log:
        log.append([LogEntry(1, i, EntryKind.NORMAL, b"x" * 60) for i in range(1, 6)])
        log.sync()
        log.append([LogEntry(1, 6, EntryKind.NORMAL, b"b" * 60)])  # torn below
        log.append([LogEntry(1, 7, EntryKind.NORMAL, b"c" * 60)])  # unsynced with it: no witness
    name = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".wal")[-1]
    data = bytearray((tmp_path / name).read_bytes())
    (b_start, *_), (_, *rest) = [(off, *r) for off, *r in Scan(bytes(data))][-2:]
    c_end = rest[-1]
    data[b_start + 30] ^= 1
    (tmp_path / name).write_bytes(bytes(data))
    assert main(["--quiet", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"opening zeroes bytes {b_start}..{c_end} of {name}" in out and "DAMAGED" not in out


def test_corruption_is_reported_with_file_and_offset(tmp_path, capsys):
    build(tmp_path)
    name = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".wal")[-1]
    data = bytearray((tmp_path / name).read_bytes())
    offsets = [off for off, *_ in Scan(bytes(data))]
    assert len(offsets) >= 4  # later records, written after syncs, vouch for the damaged one
    data[offsets[1] + 30] ^= 1
    (tmp_path / name).write_bytes(bytes(data))
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "checksum mismatch" in out and f"{name}: offset {offsets[1]}" in out and "DAMAGED" in out


def test_a_damaged_snapshot_file_fails_the_check(tmp_path, capsys):
    build(tmp_path)
    path = tmp_path / snapshot_name(100)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert main([str(tmp_path)]) == 1
    assert "DAMAGED" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main([]) == 2
    assert main([str(tmp_path / "missing")]) == 1


def test_runs_as_a_module(tmp_path):
    build(tmp_path)
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "raftfast.wal.inspect", "-q", str(tmp_path)], capture_output=True, text=True, cwd=repo)
    assert out.returncode == 0 and "@" not in out.stdout and "recovered state" in out.stdout
