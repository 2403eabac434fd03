"""The real crash test: a child process appends and syncs in a loop, reporting each synced
index, and is SIGKILLed at random moments; after each kill every reported index must be there.
The default run kills it a few times; `python -m raftfast.wal.soak --kills 200` is the soak."""

from __future__ import annotations

from raftfast.wal.soak import run


def test_sigkilled_writer_loses_nothing_it_reported(tmp_path):
    result = run(kills=4, directory=str(tmp_path), seed=11)
    assert result.losses == []
    assert result.kills == 4 and result.last_index > 0 and result.checked_entries > 0
