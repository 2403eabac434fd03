"""`raftfast wal inspect DIR`: describe a WAL directory and verify every checksum.

    python -m raftfast.wal.inspect DIR [--quiet]

Lists the snapshot files, then every segment with its records (offset, type, contents) and
where and why its records end, then the state recovery would produce from it. Read-only: it
takes no lock and repairs nothing, so it also works on a log that is open elsewhere (whose
unsynced tail may then show as torn). Exit status: 0 if the log would open (a torn tail after
a crash is normal and is reported), 1 if it is damaged, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from ..errors import StorageError
from . import format as fmt
from .fileio import FileIO
from .recovery import load
from .segment import TMP_SUFFIX, Scan, parse_segment_name
from .snapshots import load_snapshot, parse_snapshot_name


def describe(data: bytes, rtype: int, start: int, end: int) -> str:
    """One record's contents, in words."""
    try:
        if rtype == fmt.HEADER:
            h = fmt.decode_header(data, start, end)
            return (
                f"segment {h.seq}, previous ends at {h.prev_end}, last index {h.last_index}, "
                f"snapshot {h.snap_index}/{h.snap_term}, term {h.hard_state.term} vote {h.hard_state.voted_for}, "
                f"high water {h.high_water}"
            )
        if rtype == fmt.HARD_STATE:
            hs = fmt.decode_hard_state(data, start, end)
            return f"term {hs.term} vote {hs.voted_for}"
        if rtype == fmt.APPEND:
            first, runs, _ = fmt.decode_append(data, start, end, with_commands=False)
            count = sum(n for _, _, n in runs)
            kinds = {kind for _, kind, _ in runs}
            kind_names = "/".join(("normal", "config", "noop")[k] for k in sorted(kinds))
            return f"entries {first}..{first + count - 1} ({count}, {kind_names}), terms {runs[0][0]}..{runs[-1][0]}"
        if rtype == fmt.TRUNCATE:
            return f"drop entries from {fmt.decode_truncate(data, start, end)}"
        if rtype == fmt.SNAPSHOT:
            index, term, kept = fmt.decode_snapshot(data, start, end)
            return f"installed snapshot {index}/{term}, {'kept the entries above it' if kept else 'dropped every entry'}"
        return "unknown record type"
    except fmt.FormatError as e:
        return f"INVALID: {e}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="raftfast wal inspect", description="Describe a WAL directory and verify every checksum.")
    parser.add_argument("dir", help="the WAL directory")
    parser.add_argument("-q", "--quiet", action="store_true", help="one line per file, without the records")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0)
    directory = os.path.abspath(args.dir)
    io = FileIO()
    try:
        names = sorted(io.listdir(directory))
    except OSError as e:
        print(f"raftfast wal inspect: cannot list {directory}: {e}", file=sys.stderr)
        return 1
    damaged = False
    print(f"WAL directory {directory}")

    print("snapshots:")
    for name in (n for n in names if parse_snapshot_name(n) is not None):
        try:
            snap = load_snapshot(io, directory, name)
        except StorageError as e:
            print(f"  {name}  DAMAGED: {e.detail}")
            damaged = True
            continue
        config = snap.config
        print(
            f"  {name}  index {snap.index} term {snap.term}, voters {list(config.voters)} "
            f"learners {list(config.learners)}, {len(snap.data)} bytes of data, checksum ok"
        )

    print("segments:")
    for name in (n for n in names if parse_segment_name(n) is not None):
        try:
            data = io.read(os.path.join(directory, name))
        except OSError as e:
            print(f"  {name}  UNREADABLE: {e}")
            damaged = True
            continue
        scan = Scan(data)
        lines = [f"    @{offset:<10} {fmt.TYPE_NAMES.get(rtype, rtype)!s:<10} {describe(data, rtype, start, end)}" for offset, rtype, _, start, end in scan]
        if scan.failure is not None:
            offset, reason = scan.failure
            ending = f"records end at {scan.end}: {reason} (a torn tail, what a recycled file held before, or damage: see below)"
        elif scan.nonzero_end() > scan.end:
            ending = f"records end at {scan.end}, followed by non-zero bytes up to {scan.nonzero_end()} (a torn tail, or damage: see below)"
        else:
            ending = f"records end at {scan.end}, zeros after (checksums ok)"
        print(f"  {name}  {len(data)} bytes, {len(lines)} records; {ending}")
        if not args.quiet:
            print("\n".join(lines))

    temps = [n for n in names if n.endswith(TMP_SUFFIX)]
    if temps:
        print("temp files (an interrupted write, or a covered segment waiting to be recycled; deleted on open): " + ", ".join(temps))

    print("recovered state:")
    try:
        rec = load(directory, io)
    except StorageError as e:
        print(f"  DAMAGED, would not open: {e}")
        return 1
    log = rec.entries
    hs = rec.hard_state
    print(f"  snapshot {rec.snapshot.index}/{rec.snapshot.term}, entries {log.offset + 1}..{log.last_index()} "
          f"({len(log)}), term {hs.term} vote {hs.voted_for}")
    if rec.torn is not None:
        start, end = rec.torn
        print(f"  opening zeroes bytes {start}..{end} of {rec.segments[-1].name}: records written before a torn write, never synced")
    if rec.pending_snapshot is not None:
        print(f"  opening finishes installing snapshot {rec.pending_snapshot[0]} (its file is durable, its record is not)")
    if rec.obsolete:
        print("  opening deletes " + ", ".join(rec.obsolete))
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
