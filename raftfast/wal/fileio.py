"""FileIO: every system call the WAL makes, in one replaceable object.

The WAL never calls `os` directly, so tests can hand it a `FaultyIO` (see `faults.py`) that
fails a chosen call with EIO or ENOSPC, crashes at a chosen step, or forgets unsynced writes.
Methods raise `OSError`; the WAL turns that into a fail-stop `StorageError`.
"""

from __future__ import annotations

import fcntl
import os
from typing import List


class FileIO:
    """The real thing: thin wrappers over `os`."""

    threads = True
    """Whether the WAL may call this object from a background thread (to prepare the next
    segment ahead of need). A file layer that counts or orders calls says False."""

    allocates = hasattr(os, "posix_fallocate")
    """Whether `allocate` can reserve a file's blocks without writing them: how a new segment
    is made when no recycled one is at hand (else it is zero-filled)."""

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> List[str]:
        return os.listdir(path)

    def read(self, path: str) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    def create(self, path: str) -> int:
        """Open a new, empty file for writing (replacing any file of that name)."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def open_rw(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of `data` at `offset` (os.pwrite may write less than asked)."""
        written = os.pwrite(fd, data, offset)
        if written < len(data):  # rare: no memoryview on the usual path (a page of zeros, say)
            view = memoryview(data)[written:]
            offset += written
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written

    def allocate(self, fd: int, size: int) -> None:
        """Reserve bytes [0, size) of the file, reading as zeros (posix_fallocate)."""
        os.posix_fallocate(fd, 0, size)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        """Make renames, creations and deletions in directory `path` durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> int:
        """Open `path` and take an exclusive lock on it without waiting.

        Raises BlockingIOError when another open file holds it, in this process or another:
        flock locks belong to open file descriptions, so a second open in-process also fails.
        """
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd
