"""The wire codec: encode/decode of AppendEntries (256 x 64-byte entries) and of a heartbeat,
and the incremental FrameReader; both twins side by side.

The AppendEntries is what a leader sends: its entries are the compact batch its log hands out,
obtained here by one decode with the same twin.
"""

from __future__ import annotations

import pytest

from raftfast.messages import AppendEntries, AppendEntriesReply
from raftfast.types import LogEntry

from _twins import twin_module

BATCH = 256
VALUE = b"v" * 64


def _codec(twin: str):
    return twin_module("codec._codec", twin)


def _append_entries(codec) -> AppendEntries:
    entries = [LogEntry(7, 1001 + i, command=VALUE) for i in range(BATCH)]
    return codec.decode(codec.encode(AppendEntries(7, 1, 1000, 7, entries, 990)))


HEARTBEAT = AppendEntries(7, 1, 1256, 7, [], 1250)
REPLY = AppendEntriesReply(7, True, 2, 1256, 0, 0)


def test_encode_append_entries(benchmark, twin):
    codec = _codec(twin)
    message = _append_entries(codec)
    benchmark.group = "encode AppendEntries 256 x 64 B"
    benchmark.extra_info["bytes"] = len(codec.encode(message))
    benchmark(codec.encode, message)


def test_decode_append_entries(benchmark, twin):
    codec = _codec(twin)
    data = codec.encode(_append_entries(codec))
    benchmark.group = "decode AppendEntries 256 x 64 B"
    benchmark.extra_info["bytes"] = len(data)
    assert len(benchmark(codec.decode, data).entries) == BATCH


@pytest.mark.parametrize("message", [HEARTBEAT, REPLY], ids=["heartbeat", "reply"])
def test_encode_small(benchmark, twin, message):
    codec = _codec(twin)
    benchmark.group = f"encode {'heartbeat' if message is HEARTBEAT else 'AppendEntriesReply'}"
    benchmark(codec.encode, message)


@pytest.mark.parametrize("message", [HEARTBEAT, REPLY], ids=["heartbeat", "reply"])
def test_decode_small(benchmark, twin, message):
    codec = _codec(twin)
    data = codec.encode(message)
    benchmark.group = f"decode {'heartbeat' if message is HEARTBEAT else 'AppendEntriesReply'}"
    assert benchmark(codec.decode, data) == message


def test_frame_reader_small_frames(benchmark, twin):
    """feed one chunk holding 256 heartbeat frames (whole frames: the buffer empties)."""
    codec = _codec(twin)
    chunk = b"".join(codec.encode_frame(HEARTBEAT) for _ in range(BATCH))
    reader = codec.FrameReader()
    benchmark.group = "FrameReader.feed 256 heartbeat frames"
    benchmark.extra_info["bytes"] = len(chunk)
    assert len(benchmark(reader.feed, chunk)) == BATCH


def test_frame_reader_segments(benchmark, twin):
    """feed one large AppendEntries frame in 1,448-byte pieces (TCP segments on loopback
    are larger, but a peer's stream arrives in pieces like this)."""
    codec = _codec(twin)
    frame = codec.encode_frame(_append_entries(codec))
    pieces = [frame[i : i + 1448] for i in range(0, len(frame), 1448)]
    reader = codec.FrameReader()
    feed = reader.feed
    benchmark.group = "FrameReader.feed AppendEntries in 1448 B pieces"
    benchmark.extra_info["bytes"] = len(frame)

    def run():
        frames = []
        for piece in pieces:
            frames += feed(piece)
        return frames

    assert len(benchmark(run)) == 1
