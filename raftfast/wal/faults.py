"""FaultyIO: a FileIO that fails, crashes and loses power on demand.

It is how the WAL's fault tests reach the cases a real disk rarely shows: EIO or ENOSPC from a
chosen call, a crash before any chosen step (`steps` counts them, so a test can try every one),
and a power cut that forgets, or tears, whatever was written but not yet fsynced. Directory
operations are treated as durable at once; file contents are durable only once fsynced.

Durability is simulated, so the fsync calls do not reach the disk: crash tests that try
hundreds of crash points stay fast and do not depend on how busy the disk is.
"""

from __future__ import annotations

import errno as errno_codes
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional

from .fileio import FileIO


class SimulatedCrash(BaseException):
    """The process 'died' before a FaultyIO step. A BaseException, so no `except Exception`
    in the code under test can swallow it."""


@dataclass
class _Fault:
    op: str
    errno: int
    countdown: int
    path_contains: str


@dataclass
class _Undo:
    offset: int
    old: bytes
    old_size: int
    length: int


class FaultyIO(FileIO):
    """FileIO with injected failures. `crash_at=k` makes the k-th mutating step (counting from
    1) raise SimulatedCrash instead of running; `steps` is how many have been attempted."""

    MUTATING = ("create", "pwrite", "fdatasync", "fsync", "rename", "unlink", "fsync_dir")
    threads = False  # every call on the caller's thread, so step k is the same step every run
    allocates = False  # segments are zero-filled: writes whose loss a power cut can model

    def __init__(self, crash_at: Optional[int] = None) -> None:
        self.crash_at = crash_at
        self.steps = 0
        self._faults: List[_Fault] = []
        self._paths: Dict[int, str] = {}
        self._undo: Dict[str, List[_Undo]] = {}

    def fail(self, op: str, errno: int = errno_codes.EIO, nth: int = 1, path_contains: str = "") -> None:
        """Make the `nth` next call of `op` (on a path containing `path_contains`) raise
        OSError(errno), once."""
        self._faults.append(_Fault(op, errno, nth, path_contains))

    def crash(self, mode: str = "drop", rng: Optional[random.Random] = None) -> None:
        """The process dies: every descriptor it opened closes, and unsynced writes meet
        `mode`: "keep" (a process crash: the page cache survives), "drop" (a power cut before
        any of them reached the disk) or "torn" (each survives whole, in part, or not at all)."""
        for fd in list(self._paths):
            os.close(fd)
        self._paths.clear()
        if mode != "keep":
            rng = rng or random.Random(0)
            for path, undos in self._undo.items():
                if os.path.exists(path):
                    self._revert(path, undos, mode, rng)
        self._undo.clear()

    # -- the FileIO calls ------------------------------------------------------------------------

    def _step(self, op: str, path: str) -> None:
        if op in self.MUTATING:
            self.steps += 1
            if self.steps == self.crash_at:
                raise SimulatedCrash(f"crash before step {self.steps}: {op} {path}")
        for fault in self._faults:
            if fault.op == op and fault.path_contains in path:
                fault.countdown -= 1
                if fault.countdown == 0:
                    self._faults.remove(fault)
                    raise OSError(fault.errno, os.strerror(fault.errno), path)
                break

    def read(self, path: str) -> bytes:
        self._step("read", path)
        return super().read(path)

    def create(self, path: str) -> int:
        self._step("create", path)
        fd = super().create(path)
        self._paths[fd] = path
        self._undo[path] = []
        return fd

    def open_rw(self, path: str) -> int:
        self._step("open_rw", path)
        fd = super().open_rw(path)
        self._paths[fd] = path
        return fd

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        path = self._paths[fd]
        self._step("pwrite", path)
        size = os.fstat(fd).st_size
        with open(path, "rb") as f:
            f.seek(offset)
            old = f.read(len(data))
        self._undo.setdefault(path, []).append(_Undo(offset, old, size, len(data)))
        super().pwrite(fd, data, offset)

    def fdatasync(self, fd: int) -> None:
        path = self._paths[fd]
        self._step("fdatasync", path)
        self._undo.pop(path, None)

    def fsync(self, fd: int) -> None:
        path = self._paths[fd]
        self._step("fsync", path)
        self._undo.pop(path, None)

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        super().close(fd)

    def rename(self, src: str, dst: str) -> None:
        self._step("rename", src)
        super().rename(src, dst)
        for fd, path in self._paths.items():
            if path == src:
                self._paths[fd] = dst
        self._undo.pop(dst, None)
        if src in self._undo:
            self._undo[dst] = self._undo.pop(src)

    def unlink(self, path: str) -> None:
        self._step("unlink", path)
        super().unlink(path)
        self._undo.pop(path, None)

    def fsync_dir(self, path: str) -> None:
        self._step("fsync_dir", path)

    def lock(self, path: str) -> int:
        self._step("lock", path)
        fd = super().lock(path)
        self._paths[fd] = path
        return fd

    # -- power loss ------------------------------------------------------------------------------

    @staticmethod
    def _revert(path: str, undos: List[_Undo], mode: str, rng: random.Random) -> None:
        with open(path, "r+b") as f:
            for undo in reversed(undos):
                if mode == "drop":
                    keep = 0
                else:
                    keep = rng.choice((0, undo.length, rng.randrange(undo.length + 1)))
                f.seek(undo.offset + keep)
                f.write(undo.old[keep:])
                if undo.offset + undo.length > undo.old_size:  # the write had grown the file
                    f.truncate(max(undo.old_size, undo.offset + keep))
