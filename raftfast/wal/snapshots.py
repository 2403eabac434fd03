"""Snapshot files: one file per snapshot, made durable before the log refers to it.

    magic:8 | crc:u32 | index:u64 term:u64 config_len:u32 data_len:u64 | config | data
    crc = CRC32C of everything after the crc field

A snapshot is written to a temp name, fsynced, renamed into place and the directory fsynced,
so a file with a snapshot's name is always whole; a damaged one is corruption.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Optional

import crc32c

from ..errors import StorageError
from ..types import Membership, Snapshot
from .fileio import FileIO
from .segment import TMP_SUFFIX

PREFIX = "snapshot-"
SUFFIX = ".snap"

_MAGIC = b"RFSNAP01"
_HEAD = struct.Struct("<8sIQQIQ")
_CHECKED_HEAD = struct.Struct("<QQIQ")
_PIECE = 1 << 20


def snapshot_name(index: int) -> str:
    return f"{PREFIX}{index:020d}{SUFFIX}"


def parse_snapshot_name(name: str) -> Optional[int]:
    digits = name[len(PREFIX) : -len(SUFFIX)]
    if name.startswith(PREFIX) and name.endswith(SUFFIX) and len(digits) == 20 and digits.isdigit():
        return int(digits)
    return None


def write_snapshot(io: FileIO, directory: str, snapshot: Snapshot, paced: bool = False) -> None:
    """Make `snapshot` durable under its own name (replacing one with the same index).

    The data goes out in 1 MiB pieces, each synced before the next: written at once, the
    8.5 MB snapshot of the KV service under load sat in front of every fdatasync on a disk
    that three nodes share, as the spare's zeros did (`prepare_segment`). `paced` (in the
    background) also rests after each piece as long as it took, so it takes at most half of
    the disk's time from the log's fdatasyncs."""
    config = snapshot.config.encode()
    data = bytes(snapshot.data)
    try:
        checked = _CHECKED_HEAD.pack(snapshot.index, snapshot.term, len(config), len(data))
    except struct.error as e:
        raise ValueError(f"snapshot index or term out of range: {snapshot.index}, {snapshot.term}") from e
    crc = crc32c.crc32c(data, crc32c.crc32c(config, crc32c.crc32c(checked)))
    head = _HEAD.pack(_MAGIC, crc, snapshot.index, snapshot.term, len(config), len(data)) + config
    path = os.path.join(directory, snapshot_name(snapshot.index))
    tmp = path + TMP_SUFFIX
    fd = io.create(tmp)
    try:
        io.pwrite(fd, head, 0)
        _write_in_pieces(io, fd, data, len(head), paced)
        io.fsync(fd)
    finally:
        io.close(fd)
    io.rename(tmp, path)
    io.fsync_dir(directory)


def _write_in_pieces(io: FileIO, fd: int, data: bytes, offset: int, paced: bool) -> None:
    view = memoryview(data)
    last = max(0, len(data) - 1) // _PIECE * _PIECE  # the final fsync covers the last piece
    for start in range(0, last, _PIECE):
        began = time.monotonic()
        io.pwrite(fd, view[start : start + _PIECE], offset + start)
        io.fdatasync(fd)
        if paced:
            time.sleep(time.monotonic() - began)
    io.pwrite(fd, view[last:], offset + last)


def decode_snapshot(data: bytes, path: str) -> Snapshot:
    """Parse a snapshot file's bytes; StorageError naming `path` if they are not one."""
    if len(data) < _HEAD.size:
        raise StorageError(path, f"offset 0: snapshot file of {len(data)} bytes is shorter than its header")
    magic, crc, index, term, config_len, data_len = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise StorageError(path, "offset 0: not a snapshot file (bad magic)")
    if _HEAD.size + config_len + data_len != len(data):
        raise StorageError(path, f"offset 0: header says {config_len}+{data_len} bytes follow, the file has {len(data) - _HEAD.size}")
    if crc32c.crc32c(memoryview(data)[12:]) != crc:
        raise StorageError(path, "offset 0: snapshot checksum mismatch")
    if parse_snapshot_name(os.path.basename(path)) != index:
        raise StorageError(path, f"offset 0: the file holds the snapshot at index {index}, not the one its name says")
    config_at = _HEAD.size
    try:
        config = Membership.decode(data[config_at : config_at + config_len])
    except ValueError as e:
        raise StorageError(path, f"offset {config_at}: {e}") from None
    return Snapshot(index, term, config, data[config_at + config_len :])


def load_snapshot(io: FileIO, directory: str, name: str) -> Snapshot:
    path = os.path.join(directory, name)
    try:
        data = io.read(path)
    except OSError as e:
        raise StorageError(path, f"cannot read: {e}") from e
    return decode_snapshot(data, path)
