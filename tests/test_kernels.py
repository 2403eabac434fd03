"""The entry, quorum and proposal kernels against naive references, in every twin that is built.

A compiled twin that is not built is skipped here; `tests/test_build.py` makes sure the
compiled leg of CI really has them.
"""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftfast.types import EntryKind, LogEntry
from twins import built_twins


ENTRY_TWINS = built_twins("raftfast.log._entries")
QUORUM_TWINS = built_twins("raftfast.quorum._quorum")
PROPOSAL_TWINS = built_twins("raftfast._proposals")


class NaiveLog:
    """The obvious list-of-entries log the kernels must agree with."""

    def __init__(self) -> None:
        self.offset = 0
        self.offset_term = 0
        self.entries: list = []

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term_at(self, i: int):
        if i == self.offset:
            return self.offset_term
        if self.offset < i <= self.last_index():
            return self.entries[i - self.offset - 1].term
        return None

    def truncate(self, i: int) -> None:
        del self.entries[i - self.offset - 1 :]

    def compact(self, i: int, term: int) -> None:
        if self.term_at(i) == term:
            self.entries = self.entries[i - self.offset :]
        else:
            self.entries = []
        self.offset, self.offset_term = i, term


operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3), st.lists(st.binary(max_size=12), max_size=6), st.sampled_from(list(EntryKind))),
        st.tuples(st.just("batch_append"), st.integers(0, 3), st.lists(st.binary(max_size=12), max_size=6)),
        st.tuples(st.just("raw_append"), st.integers(0, 3), st.lists(st.binary(max_size=12), max_size=6)),
        st.tuples(st.just("truncate"), st.integers(0, 40)),
        st.tuples(st.just("compact"), st.integers(0, 40), st.booleans()),
    ),
    max_size=30,
)


@pytest.mark.parametrize("twin", ENTRY_TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@settings(max_examples=150, deadline=None)
@given(ops=operations, probes=st.lists(st.tuples(st.integers(-2, 45), st.integers(1, 8), st.integers(0, 40)), max_size=8))
def test_entry_log_matches_naive_reference(twin, ops, probes):
    log, ref = twin.EntryLog(), NaiveLog()
    for op in ops:
        if op[0] in ("append", "batch_append", "raw_append"):
            term = ref.last_term() + op[1]
            first = ref.last_index() + 1
            kind = op[3] if op[0] == "append" else EntryKind.NORMAL
            new = [LogEntry(term, first + k, kind, c) for k, c in enumerate(op[2])]
            if op[0] == "append":
                log.append(new)
            elif op[0] == "raw_append":
                log.extend_raw(array("q", [term] * len(new)), bytes(len(new)), list(op[2]))
            else:
                log.append(twin.EntryBatch(first, [term] * len(new), bytes(len(new)), list(op[2])))
            ref.entries += new
        elif op[0] == "truncate":
            if op[1] <= ref.offset:
                with pytest.raises(ValueError):
                    log.truncate(op[1])
            else:
                log.truncate(op[1])
                ref.truncate(op[1])
        else:
            index = op[1]
            if index < ref.offset:
                with pytest.raises(ValueError):
                    log.compact(index, 1)
                continue
            term = ref.term_at(index) if op[2] and ref.term_at(index) is not None else ref.last_term() + 1
            log.compact(index, term)
            ref.compact(index, term)
        assert log.last_index() == ref.last_index()
        assert log.last_term() == ref.last_term()
        assert log.offset == ref.offset and log.offset_term == ref.offset_term
        assert len(log) == len(ref.entries)
        assert log.payload_bytes == sum(len(e.command) for e in ref.entries)
    for i in range(ref.offset - 2, ref.last_index() + 3):
        assert log.term_at(i) == ref.term_at(i)
    if ref.entries:
        lo, hi = ref.offset + 1, ref.last_index()
        assert log.entries(lo, hi) == ref.entries
        terms, kinds, commands = log.slices(lo, hi)
        assert list(terms) == [e.term for e in ref.entries]
        assert list(kinds) == [int(e.kind) for e in ref.entries]
        assert commands == [e.command for e in ref.entries]
    for lo, count, max_bytes in probes:
        if ref.offset < lo <= ref.last_index() + 1:
            got = log.batch(lo, count, max_bytes)
            want = ref.entries[lo - ref.offset - 1 : lo - ref.offset - 1 + count]
            if want:
                # the first entry always goes; then add while within max_bytes
                keep, size = 1, len(want[0].command)
                while keep < len(want) and size + len(want[keep].command) <= max_bytes:
                    size += len(want[keep].command)
                    keep += 1
                want = want[:keep]
            assert list(got) == want
            assert got == want
        else:
            with pytest.raises(IndexError):
                log.batch(lo, count, max_bytes)


@pytest.mark.parametrize("twin", ENTRY_TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_append_is_all_or_nothing(twin):
    log = twin.EntryLog()
    log.append([LogEntry(1, 1), LogEntry(1, 2)])
    with pytest.raises(ValueError, match="expected index 5, got 4"):
        log.append([LogEntry(1, 3), LogEntry(1, 4), LogEntry(1, 4)])
    assert log.last_index() == 2
    with pytest.raises(ValueError, match="below"):
        log.append(twin.EntryBatch(3, [2, 1], bytes(2), [b"a", b"b"]))
    assert log.last_index() == 2 and log.last_term() == 1
    with pytest.raises(ValueError, match="kind"):
        log.append(twin.EntryBatch(3, [2], b"\x07", [b"a"]))
    with pytest.raises(TypeError):
        log.append_commands(1, 0, ["text"])
    assert log.last_index() == 2


@pytest.mark.parametrize("twin", ENTRY_TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_entry_batch_sequence_behaviour(twin):
    batch = twin.EntryBatch(5, [1, 1, 2], bytes([0, 1, 2]), [b"a", b"b", b"c"])
    assert len(batch) == 3 and batch.first_index == 5 and batch.last_index == 7
    assert batch[0] == LogEntry(1, 5, EntryKind.NORMAL, b"a")
    assert batch[-1] == LogEntry(2, 7, EntryKind.NOOP, b"c")
    assert list(batch[1:]) == [LogEntry(1, 6, EntryKind.CONFIG, b"b"), LogEntry(2, 7, EntryKind.NOOP, b"c")]
    assert batch[1:].first_index == 6
    assert batch == list(batch)
    with pytest.raises(IndexError):
        batch[3]
    with pytest.raises(ValueError):
        batch[::2]
    with pytest.raises(ValueError):
        twin.EntryBatch(1, [1], b"", [b"x"])


@pytest.mark.parametrize("twin", QUORUM_TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@given(st.lists(st.integers(0, 2**40), min_size=0, max_size=40))
def test_committed_index_is_the_majority_median(twin, matches):
    expected = 0
    if matches:
        majority = len(matches) // 2 + 1
        # the largest index that at least a majority has reached
        expected = max(i for i in matches if sum(m >= i for m in matches) >= majority)
    assert twin.committed_index(list(matches)) == expected


@pytest.mark.parametrize("twin", QUORUM_TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@given(
    voters=st.sets(st.integers(1, 9), max_size=7),
    granted=st.sets(st.integers(1, 12)),
    rejected=st.sets(st.integers(1, 12)),
)
def test_vote_result_against_counting(twin, voters, granted, rejected):
    rejected = rejected - granted
    majority = len(voters) // 2 + 1
    yes, no = len(voters & granted), len(voters & rejected)
    if yes >= majority:
        want = twin.VOTE_WON
    elif len(voters) - no < majority:
        want = twin.VOTE_LOST
    else:
        want = twin.VOTE_PENDING
    assert twin.vote_result(voters, granted, rejected) == want


def _naive_take(events, max_bytes):
    """What take_proposals must do: the commands of the leading well-formed proposals, and
    the first event that is not one (None when there is none)."""
    from raftfast.events import Event

    taken = []
    for i, event in enumerate(events):
        command = event.command if type(event) is Event.Propose else None
        if type(command) is not bytes or len(command) > max_bytes:
            return taken, i
        taken.append(command)
    return taken, None


_EVENT_CHOICES = st.one_of(
    st.binary(max_size=12).map(lambda b: ("propose", b)),
    st.sampled_from([("propose", bytearray(b"ba")), ("propose", "text"), ("tick", None), ("none", None)]),
)


@pytest.mark.parametrize("twin", PROPOSAL_TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
@given(st.lists(_EVENT_CHOICES, max_size=30), st.integers(0, 16))
def test_take_proposals_stops_at_the_first_event_it_cannot_take(twin, choices, max_bytes):
    from raftfast.events import Event

    make = {"propose": Event.Propose, "tick": lambda _: Event.Tick(), "none": lambda _: None}
    events = [make[kind](value) for kind, value in choices]
    want, stop = _naive_take(events, max_bytes)
    proposals = [b"earlier"]
    it = iter(events)
    got = twin.take_proposals(it, proposals, max_bytes)
    assert proposals == [b"earlier"] + want
    if stop is None:
        assert got is twin.END
    else:
        assert got is events[stop]
        assert list(it) == events[stop + 1 :]  # the stopping event is consumed, no more


@pytest.mark.parametrize("twin", PROPOSAL_TWINS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_take_proposals_on_an_unset_command_raises_as_the_attribute_would(twin):
    from raftfast.events import Event

    blank = Event.Propose.__new__(Event.Propose)
    with pytest.raises(AttributeError, match="command"):
        twin.take_proposals(iter([blank]), [], 10)
