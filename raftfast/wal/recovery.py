"""Recovery: read a WAL directory back into the exact logical state, changing nothing.

`load` only reads; what must be repaired (a torn tail to zero, temp files and obsolete files to
delete, an interrupted snapshot install to finish) comes back as data for `WalLog.open` to do.
Every repair is idempotent, so a crash during recovery is followed by the same recovery.

Replay starts from the newest snapshot file. Entries at or below `base` (one below the
snapshot, so that an interrupted install can still look up the term at its index, or the last
entry before the first segment) are not needed and are skipped, which is what lets compaction
delete segments that only hold them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..errors import StorageError
from ..log._entries import EntryLog
from ..types import EMPTY_SNAPSHOT, HardState, Snapshot
from . import format as fmt
from .fileio import FileIO
from .segment import TMP_SUFFIX, Scan, parse_segment_name
from .snapshots import load_snapshot, parse_snapshot_name


@dataclass
class SegmentInfo:
    seq: int
    name: str
    high_water: int
    """The highest entry index written in any earlier segment: this segment and all later
    ones are enough once the snapshot reaches it."""
    size: int
    """The file's size: a covered segment of the full size is recycled as a later one."""


@dataclass
class Recovered:
    snapshot: Snapshot
    entries: EntryLog
    hard_state: HardState
    segments: List[SegmentInfo]
    """The live segments, oldest first; the last is the one to write to. Empty: a new log."""
    end: int = 0
    """Where the valid records of the last segment end."""
    size: int = 0
    """The last segment's file size."""
    high_water: int = 0
    """The highest entry index ever written to the live segments."""
    obsolete: List[str] = field(default_factory=list)
    """Files to delete: temp files, older snapshots, segments left by an interrupted compaction."""
    seed: int = 0
    """The checksum seed of the last segment's records (`format.segment_seed`)."""
    torn: Optional[Tuple[int, int]] = None
    """Bytes [start, end) of the last segment, past the end of its records, that hold valid
    records written before a torn write: to be zeroed, so they are never read back."""
    pending_snapshot: Optional[Tuple[int, int, bool]] = None
    """(index, term, kept) of a snapshot whose file is durable but whose log record is not."""
    logged_last: int = 0
    logged_snap: Tuple[int, int] = (0, 0)
    """The last index and the snapshot as the records describe them, before any pending install."""


class _Replay:
    """The log rebuilt record by record, holding only entries above `base`.

    It tracks the live log's last index and snapshot as the records describe them, so that
    every record can be checked against the state it was written in.
    """

    def __init__(self, header: fmt.Header, snapshot_index: int) -> None:
        # Entries up to the header's last index are in earlier segments, which compaction may
        # have deleted: replay cannot know them, so it starts above them.
        base = max(snapshot_index - 1, header.snap_index, header.last_index)
        self.base = base
        self.base_term: Optional[int] = header.snap_term if base == header.snap_index else (0 if base == 0 else None)
        self.terms: List[int] = []
        self.kinds = bytearray()
        self.commands: List[bytes] = []
        self.last = header.last_index
        self.snap = (header.snap_index, header.snap_term)
        self.hard_state = header.hard_state
        self.high_water = header.high_water

    def _clear(self) -> None:
        self.terms, self.kinds, self.commands = [], bytearray(), []

    def term_at(self, index: int) -> Optional[int]:
        if index == self.base:
            return self.base_term
        if self.base < index <= self.last:
            return self.terms[index - self.base - 1]
        return None

    def next_header(self, h: fmt.Header) -> None:
        if (h.last_index, (h.snap_index, h.snap_term), h.hard_state, h.high_water) != (
            self.last, self.snap, self.hard_state, self.high_water
        ):
            raise fmt.FormatError(
                f"segment header (last index {h.last_index}, snapshot {h.snap_index}/{h.snap_term}, {h.hard_state}, "
                f"high water {h.high_water}) does not continue the previous segment (last index {self.last}, "
                f"snapshot {self.snap[0]}/{self.snap[1]}, {self.hard_state}, high water {self.high_water})"
            )

    def append(self, first: int, runs: List[fmt.Run], commands: List[bytes]) -> None:
        if first != self.last + 1:
            raise fmt.FormatError(f"append at index {first}, but the log ends at {self.last}")
        last = first + len(commands) - 1
        terms: List[int] = []
        kinds = bytearray()
        for term, kind, n in runs:
            terms += [term] * n
            kinds += bytes((kind,)) * n
        skip = self.base + 1 - first
        if skip > 0:
            terms, kinds, commands = terms[skip:], kinds[skip:], commands[skip:]
        if terms:
            previous = self.terms[-1] if self.terms else (self.base_term if skip <= 0 else None)
            if previous is not None and terms[0] < previous:
                raise fmt.FormatError(f"append of term {terms[0]} after term {previous}")
            self.terms += terms
            self.kinds += kinds
            self.commands += commands
        self.last = last
        self.high_water = max(self.high_water, last)

    def truncate(self, from_index: int) -> None:
        if not self.snap[0] < from_index <= self.last:
            raise fmt.FormatError(f"truncate at {from_index} outside the log ({self.snap[0] + 1}..{self.last})")
        keep = from_index - self.base - 1
        if keep > 0:
            del self.terms[keep:], self.kinds[keep:], self.commands[keep:]
        else:
            self._clear()
        self.last = from_index - 1

    def snapshot(self, index: int, term: int, kept: bool) -> None:
        if index < self.snap[0]:
            raise fmt.FormatError(f"snapshot at {index} is older than the one before it ({self.snap[0]})")
        if kept:
            if index > self.last:
                raise fmt.FormatError(f"snapshot at {index} kept entries, but the log ends at {self.last}")
            if index > self.base:
                if self.term_at(index) != term:
                    raise fmt.FormatError(f"snapshot at {index} kept entries, but the term there is not {term}")
                drop = index - self.base
                del self.terms[:drop], self.kinds[:drop], self.commands[:drop]
            elif index == self.base and self.base_term not in (None, term):
                raise fmt.FormatError(f"snapshot at {index} kept entries, but the term there is not {term}")
        else:
            self._clear()
            self.last = index
        if index >= self.base:
            self.base, self.base_term = index, term
        self.snap = (index, term)

    def finish(self, snapshot: Snapshot, first_high_water: int, context: str) -> Tuple[EntryLog, Optional[Tuple[int, int, bool]]]:
        """The entry log above `snapshot`, finishing its install if the log never recorded it."""
        pending = None
        if snapshot.index < self.snap[0]:
            raise StorageError(context, f"the log refers to the snapshot at index {self.snap[0]}, but its file is missing")
        if first_high_water > self.snap[0]:
            raise StorageError(
                context,
                f"segments are missing: the first one follows entries up to {first_high_water}, "
                f"but the snapshot covers only {self.snap[0]}",
            )
        if (snapshot.index, snapshot.term) != self.snap:
            kept = self.term_at(snapshot.index) == snapshot.term
            try:
                self.snapshot(snapshot.index, snapshot.term, kept)
            except fmt.FormatError as e:
                raise StorageError(context, str(e)) from None
            pending = (snapshot.index, snapshot.term, kept)
        if self.terms and self.terms[0] < snapshot.term:
            raise StorageError(context, f"entry {snapshot.index + 1} has term {self.terms[0]}, below the snapshot's {snapshot.term}")
        entries = EntryLog(snapshot.index, snapshot.term)
        entries.extend_raw(self.terms, bytes(self.kinds), self.commands)
        return entries, pending


def load(directory: str, io: FileIO) -> Recovered:
    """The logical state stored in `directory`; StorageError if it is corrupt."""
    try:
        names = io.listdir(directory)
    except OSError as e:
        raise StorageError(directory, f"cannot list: {e}") from e
    obsolete = [n for n in names if n.endswith(TMP_SUFFIX)]
    segments = sorted((seq, n) for n in names if (seq := parse_segment_name(n)) is not None)
    snapshots = sorted((index, n) for n in names if (index := parse_snapshot_name(n)) is not None)
    snapshot = load_snapshot(io, directory, snapshots[-1][1]) if snapshots else EMPTY_SNAPSHOT
    obsolete += [n for _, n in snapshots[:-1]]
    if not segments:
        if snapshots:
            raise StorageError(directory, "there are snapshot files but no log segments")
        return Recovered(snapshot, EntryLog(), HardState(), [], obsolete=obsolete)
    # A gap in the numbering is an interrupted compaction only if the segments before it are
    # covered by the snapshot, which finish() checks against the first segment after it.
    start = max((i for i in range(1, len(segments)) if segments[i][0] != segments[i - 1][0] + 1), default=0)
    obsolete += [n for _, n in segments[:start]]
    segments = segments[start:]

    replay: Optional[_Replay] = None
    infos: List[SegmentInfo] = []
    prev_end = 0
    # Where the records of the sealed segment before stop, and why there: what follows the
    # last record of a recycled file is its earlier life, so a sealed segment may end in
    # anything, provided the next segment's header says its records end there.
    sealed: Optional[Tuple[str, Tuple[int, str]]] = None
    scan = Scan(b"")
    for position, (seq, name) in enumerate(segments):
        path = os.path.join(directory, name)
        last_segment = position == len(segments) - 1
        try:
            data = io.read(path)
        except OSError as e:
            raise StorageError(path, f"cannot read: {e}") from e
        scan = Scan(data)
        offset = 0
        try:
            records = iter(scan)
            first = next(records, None)
            if first is None or first[1] != fmt.HEADER:
                raise StorageError(path, f"offset 0: no valid segment header ({scan.failure[1] if scan.failure else 'not a header'})")
            header = fmt.decode_header(data, first[3], first[4])
            if header.seq != seq:
                raise StorageError(path, f"offset 0: the file holds segment {header.seq}: segments were renamed or reordered")
            if replay is None:
                replay = _Replay(header, snapshot.index)
                first_high_water = header.high_water if seq != 1 else 0
            else:
                if header.prev_end != prev_end:
                    if sealed is not None:
                        sealed_path, (at, reason) = sealed
                        raise StorageError(sealed_path, f"offset {at}: {reason}, in a sealed segment whose records run to {header.prev_end}")
                    raise StorageError(path, f"offset 0: the previous segment should end at {header.prev_end}, it ends at {prev_end}")
                replay.next_header(header)
            infos.append(SegmentInfo(seq, name, header.high_water, len(data)))
            for offset, rtype, _, start_at, end_at in records:
                if rtype == fmt.APPEND:
                    replay.append(*fmt.decode_append(data, start_at, end_at))
                elif rtype == fmt.HARD_STATE:
                    replay.hard_state = fmt.decode_hard_state(data, start_at, end_at)
                elif rtype == fmt.TRUNCATE:
                    replay.truncate(fmt.decode_truncate(data, start_at, end_at))
                elif rtype == fmt.SNAPSHOT:
                    replay.snapshot(*fmt.decode_snapshot(data, start_at, end_at))
                else:
                    raise fmt.FormatError(f"unexpected record type {rtype}")
        except fmt.FormatError as e:
            raise StorageError(path, f"offset {offset}: {e}") from None
        torn = None
        failure = scan.failure
        if last_segment:
            witness, furthest = scan.records_after(scan.end)
            if witness is not None:
                at, reason = failure or (scan.end, "the records stop at zeros")
                raise StorageError(path, f"offset {at}: {reason}; the record at {witness} was written after this offset was synced")
            if furthest > scan.end:
                torn = (scan.end, furthest)
        sealed = (path, failure or (scan.end, "the records stop at zeros")) if not last_segment else None
        prev_end = scan.end

    assert replay is not None
    logged_last, logged_snap = replay.last, replay.snap
    entries, pending = replay.finish(snapshot, first_high_water, directory)
    return Recovered(
        snapshot,
        entries,
        replay.hard_state,
        infos,
        end=scan.end,
        size=len(scan.data),
        seed=scan.seed,
        high_water=replay.high_water,
        obsolete=obsolete,
        torn=torn,
        pending_snapshot=pending,
        logged_last=logged_last,
        logged_snap=logged_snap,
    )
