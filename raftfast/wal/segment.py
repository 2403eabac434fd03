"""Segment files: their names, their creation, and walking the records inside one.

A segment is a fixed-size file filled with zeros when it is made, or a covered segment
recycled, then overwritten in place from the front. Writing into blocks that already exist
means fdatasync commits no metadata, which measured about 2.5x cheaper here than appending.
The valid records end where the zeros begin, or at the first bytes that are not a record of
this segment (its checksums are seeded with its number), which recovery judges.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Iterator, Optional, Tuple

import crc32c

from .fileio import FileIO
from .format import FRAME, FRAME_SIZE, MAX_PAYLOAD, seed_of, segment_magic

PREFIX = "segment-"
SUFFIX = ".wal"
TMP_SUFFIX = ".tmp"
RECYCLED_PREFIX = "recycled-"

_ZEROS = bytes(1 << 20)
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_ZERO_FILL_BYTES = 4 << 20
"""Segments up to this size are zero-filled even where they could be allocated: a log's first
segments, where a lightly loaded node spends its time, keep the cheaper fdatasync of written
blocks, and their zeros are few."""
_ZERO_SYNC_BYTES = 1 << 20
_NO_MAGIC = b"\0\0\0\0"


def segment_name(seq: int) -> str:
    return f"{PREFIX}{seq:020d}{SUFFIX}"


def recycled_name(seq: int) -> str:
    """The name covered segment `seq` waits under to be reused as a spare: a temp file, so
    recovery deletes it. Each has its own name, so the thread renaming one into a spare and a
    deleter replacing it with a larger one never touch the same file."""
    return f"{RECYCLED_PREFIX}{seq:020d}{SUFFIX}{TMP_SUFFIX}"


def parse_segment_name(name: str) -> Optional[int]:
    digits = name[len(PREFIX) : -len(SUFFIX)]
    if name.startswith(PREFIX) and name.endswith(SUFFIX) and len(digits) == 20 and digits.isdigit():
        return int(digits)
    return None


def write_zeros(io: FileIO, fd: int, start: int, end: int) -> None:
    """Zero bytes [start, end) in 1 MiB writes. Few, large writes matter on the spare
    segment's thread: each write takes the GIL, and page-sized ones (16,384 per 64 MiB) left
    it so far behind a busy event loop that rotation waited for it, up to 0.3 s at 200k
    writes/s. Large writes make large page-cache folios, whose dirtying /proc/self/io counts
    whole (1 MiB per group commit), but ext4 writes back only the dirty blocks: at the device
    (/sys/block/*/stat) a 100-byte commit into such a folio writes 4 KB, as with page-sized
    folios, and its fdatasync takes as long."""
    step = len(_ZEROS)
    while start < end:
        n = min(step, end - start)
        io.pwrite(fd, _ZEROS if n == step else _ZEROS[:n], start)
        start += n


def prepare_segment(io: FileIO, directory: str, seq: int, size: int, stop: Optional[threading.Event] = None) -> int:
    """Make the temp file of segment `seq`: `size` bytes reading as zeros, fsynced; return how
    many bytes it holds.

    Where the file layer can, a segment larger than 4 MiB has its blocks allocated without
    being written (fallocate): at once, and with nothing for the disk to write back. Zeros
    written (and written back) took the disk from every node's fdatasyncs while segments still
    double: at 150k writes/s, p50 27.5 and 31.5 ms against 20.7 and 22.0 ms allocated, and
    235-244k committed writes/s in the closed loop against 267-280k. A write into an allocated but unwritten block costs
    its fdatasync an extent conversion (about 1.6x a 4 KB fdatasync into written blocks, on
    its own), which recycled segments, the usual spare once the log is compacted, do not pay,
    nor the small first segments, which are still zero-filled (`_ZERO_FILL_BYTES`): a single
    client's write, two fdatasyncs end to end, would pay it twice.

    Otherwise it writes the zeros, syncing every MiB, so the disk never holds a long queue of
    them in front of the log's own fdatasyncs. Given `stop` (ahead of need, in the
    background), it also rests after each piece as long as the piece took, so the zeros take
    at most half the disk's time from the log's fdatasyncs; and once `stop` is set it ends at
    the next piece boundary, with a shorter file, because a rotation that cannot wait needs
    what is there now."""
    fd = io.create(os.path.join(directory, segment_name(seq) + TMP_SUFFIX))
    prepared = 0
    try:
        if io.allocates and size > _ZERO_FILL_BYTES and _allocated(io, fd, size):
            prepared = size
        while prepared < size and not (stop is not None and stop.is_set()):
            began = time.monotonic()
            end = min(size, prepared + _ZERO_SYNC_BYTES)
            write_zeros(io, fd, prepared, end)
            io.fdatasync(fd)
            prepared = end
            if stop is not None:
                stop.wait(time.monotonic() - began)
        io.fsync(fd)  # commits the file's size, whether whole or cut short
    finally:
        io.close(fd)
    return prepared


def _allocated(io: FileIO, fd: int, size: int) -> bool:
    """Whether `allocate` reserved the file's blocks; False where the file system cannot (the
    zeros are written instead). Any other error, running out of space included, is raised."""
    try:
        io.allocate(fd, size)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise
    return True


def reuse_segment(io: FileIO, directory: str, recycled: str, seq: int, size: int) -> int:
    """Make the recycled segment `recycled` (`size` bytes) the temp file of segment `seq`;
    return its size. Its blocks exist, so writing into them commits no metadata, as with
    zeros; what it held fails the checksums of segment `seq`'s records, which are seeded with
    `seq` (`format.segment_seed`)."""
    io.rename(os.path.join(directory, recycled), os.path.join(directory, segment_name(seq) + TMP_SUFFIX))
    return size


def install_segment(io: FileIO, directory: str, seq: int, preamble: bytes) -> None:
    """Write `preamble` into the prepared temp file of segment `seq`, fsync it, rename it into
    place and fsync the directory. A crash at any step leaves either no segment `seq` (and maybe
    a temp file, which recovery deletes) or a whole one."""
    path = os.path.join(directory, segment_name(seq))
    fd = io.open_rw(path + TMP_SUFFIX)
    try:
        io.pwrite(fd, preamble, 0)
        io.fsync(fd)
    finally:
        io.close(fd)
    io.rename(path + TMP_SUFFIX, path)
    io.fsync_dir(directory)


class Scan:
    """Walks the records of one segment image, stopping at the first bytes that are not one.

    Record checksums are checked with the segment's seed, read from its header (`seed_of`), so
    what a recycled file held in its earlier life is never taken for a record. Iterating yields
    (offset, type, synced, payload start, payload end) for each record whose length fits the file
    and whose checksum matches. Afterwards `end` is the offset just past the last of them, and
    `failure` is (offset, reason) for bytes there that are not a record, or None where the
    records stop at a zero header or at the end of the file. What lies beyond is a separate
    question (`records_after`), asked only of the last segment.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.seed = seed_of(data)
        self.magic = segment_magic(self.seed)
        self.end = 0
        self.failure: Optional[Tuple[int, str]] = None
        self._nonzero_end: Optional[int] = None

    def __iter__(self) -> Iterator[Tuple[int, int, int, int, int]]:
        data = self.data
        view = memoryview(data)
        limit = len(data)
        unpack = FRAME.unpack_from
        crc = crc32c.crc32c
        seed = self.seed
        own = self.magic
        pos = 0
        while pos + FRAME_SIZE <= limit:
            magic, check, size, synced, rtype = unpack(data, pos)
            if magic != own:
                if magic != _NO_MAGIC:
                    self.failure = (pos, "no record here (bad magic)")
                break
            end = pos + FRAME_SIZE + size
            if size > MAX_PAYLOAD or end > limit:
                self.failure = (pos, f"record length {size} runs past the end of the file or the maximum")
                break
            if crc(view[pos + 8 : end], seed) != check:
                self.failure = (pos, "checksum mismatch")
                break
            yield pos, rtype, synced, pos + FRAME_SIZE, end
            pos = end
        self.end = pos

    def nonzero_end(self) -> int:
        """The offset just past the last non-zero byte."""
        if self._nonzero_end is None:
            data = self.data
            end = len(data)
            step = len(_ZEROS)
            # Whole chunks are compared with a zero block (a memcmp); only the chunk holding
            # the last non-zero byte is stripped, since bytes.rstrip is ~25x slower per byte.
            while end > 0:
                start = max(0, end - step)
                chunk = data[start:end]
                if chunk != _ZEROS[: end - start]:
                    end = start + len(chunk.rstrip(b"\0"))
                    break
                end = start
            self._nonzero_end = end
        return self._nonzero_end

    def records_after(self, offset: int) -> Tuple[Optional[int], int]:
        """Valid records of this segment that lie beyond `offset`, where the walk stopped:
        (the offset of one that was written once `offset` was already durable, or None; the end
        of the furthest one, or `offset` if there is none).

        The first proves the bytes at `offset` were synced, so a failure there is corruption.
        Without one it is a torn write of unsynced data; the valid records beyond it were
        written before the tear and never synced either, and must never be read back (new
        records ending just before one would bring it back), so recovery zeroes up to the
        second. Leftovers of a recycled file have another magic: the search skips them at the
        speed of a byte search, and they need no zeroing."""
        data = self.data
        view = memoryview(data)
        limit = self.nonzero_end()
        crc = crc32c.crc32c
        seed = self.seed
        magic = self.magic
        furthest = offset
        at = data.find(magic, offset + 1, limit)
        while at != -1:
            if at + FRAME_SIZE <= limit:
                _, check, size, synced, _ = FRAME.unpack_from(data, at)
                end = at + FRAME_SIZE + size
                if size <= MAX_PAYLOAD and end <= len(data) and crc(view[at + 8 : end], seed) == check:
                    if synced > offset:
                        return at, end
                    furthest = end
                    at = data.find(magic, end, limit)  # a magic inside it is its payload
                    continue
            at = data.find(magic, at + 1, limit)
        return None, furthest
