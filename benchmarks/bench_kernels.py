"""asv: the compiled kernels, one class per operation, parametrised over the two twins.

Each twin is imported directly (`raftfast.log._entries_py` / `_entries_c`, ...), so one asv
run times both whatever build is live; a compiled twin that is not built is skipped (setup
raises NotImplementedError). Every timed call does a batch's worth of work (tens of
microseconds or more), so the timer's own cost stays out of the figures; benchmarks that
mutate their state set `number = 1` and get a fresh state from `setup` before each call.
"""

from __future__ import annotations

from raftfast.messages import AppendEntries, AppendEntriesReply
from raftfast.types import EntryKind, LogEntry

from ._asv_util import TWINS, twin_module
from .workloads import BATCH, VALUE

BATCHES = 64  # appends fill a fresh log with 64 x 256 entries per call
COMMANDS = [VALUE] * BATCH
READ_LOG = 100_000


def _filled_log(EntryLog, entries: int):
    log = EntryLog()
    for start in range(0, entries, BATCH):
        log.append_commands(1, 0, COMMANDS[: min(BATCH, entries - start)])
    return log


class _Twin:
    params = TWINS
    param_names = ["twin"]


# -- the entry log --------------------------------------------------------------------------


class EntryLogAppend(_Twin):
    """append(list of 256 LogEntry) x 64 into a fresh log (16,384 entries per call)."""

    def setup(self, twin):
        self.EntryLog = twin_module("log._entries", twin).EntryLog
        self.batches = [
            [LogEntry(1, b * BATCH + i + 1, EntryKind.NORMAL, VALUE) for i in range(BATCH)]
            for b in range(BATCHES)
        ]

    def time_append(self, twin):
        log = self.EntryLog()
        for batch in self.batches:
            log.append(batch)


class EntryLogAppendBatch(_Twin):
    """append(EntryBatch of 256) x 64 into a fresh log: the follower's path."""

    def setup(self, twin):
        self.EntryLog = twin_module("log._entries", twin).EntryLog
        source = _filled_log(self.EntryLog, BATCH * BATCHES)
        self.batches = [source.batch(1 + b * BATCH, BATCH, 1 << 30) for b in range(BATCHES)]

    def time_append_batch(self, twin):
        log = self.EntryLog()
        for batch in self.batches:
            log.append(batch)


class EntryLogAppendCommands(_Twin):
    """append_commands(term, kind, 256 commands) x 64 into a fresh log: the leader's path."""

    def setup(self, twin):
        self.EntryLog = twin_module("log._entries", twin).EntryLog

    def time_append_commands(self, twin):
        log = self.EntryLog()
        for _ in range(BATCHES):
            log.append_commands(1, 0, COMMANDS)


class EntryLogTermAt(_Twin):
    """term_at at 1,024 indexes spread over a 100,000-entry log."""

    def setup(self, twin):
        self.log = _filled_log(twin_module("log._entries", twin).EntryLog, READ_LOG)
        self.indexes = list(range(1, READ_LOG + 1, READ_LOG // 1024))[:1024]

    def time_term_at(self, twin):
        term_at = self.log.term_at
        for i in self.indexes:
            term_at(i)


class EntryLogBatch(_Twin):
    """batch(lo, 256, 1 MiB) at 16 places in a 100,000-entry log: AppendEntries payloads."""

    def setup(self, twin):
        self.log = _filled_log(twin_module("log._entries", twin).EntryLog, READ_LOG)
        self.starts = list(range(1, READ_LOG - BATCH, READ_LOG // 16))[:16]

    def time_batch(self, twin):
        batch = self.log.batch
        for lo in self.starts:
            batch(lo, BATCH, 1 << 20)


class EntryLogTruncate(_Twin):
    """truncate the upper half of a 16,384-entry log (a fresh log before each call)."""

    number = 1
    repeat = (10, 50, 5.0)

    def setup(self, twin):
        self.log = _filled_log(twin_module("log._entries", twin).EntryLog, BATCH * BATCHES)

    def time_truncate(self, twin):
        self.log.truncate(BATCH * BATCHES // 2 + 1)


class EntryLogCompact(_Twin):
    """compact the lower half of a 16,384-entry log (a fresh log before each call)."""

    number = 1
    repeat = (10, 50, 5.0)

    def setup(self, twin):
        self.log = _filled_log(twin_module("log._entries", twin).EntryLog, BATCH * BATCHES)

    def time_compact(self, twin):
        self.log.compact(BATCH * BATCHES // 2, 1)


# -- quorum math ----------------------------------------------------------------------------


class CommittedIndex(_Twin):
    """committed_index over 3 and over 5 voters' match indexes, 1,000 calls."""

    def setup(self, twin):
        self.committed_index = twin_module("quorum._quorum", twin).committed_index

    def time_three_voters(self, twin):
        committed_index = self.committed_index
        for i in range(1000):
            committed_index([i + 210, i, i + 100])

    def time_five_voters(self, twin):
        committed_index = self.committed_index
        for i in range(1000):
            committed_index([i + 900, i + 1000, i + 700, i + 1200, i + 1100])


class VoteResult(_Twin):
    """vote_result over 5 voters, 1,000 calls."""

    def setup(self, twin):
        self.vote_result = twin_module("quorum._quorum", twin).vote_result

    def time_vote_result(self, twin):
        vote_result = self.vote_result
        voters, granted, rejected = (1, 2, 3, 4, 5), {1, 3, 5}, {2}
        for _ in range(1000):
            vote_result(voters, granted, rejected)


# -- the codec ------------------------------------------------------------------------------

HEARTBEAT = AppendEntries(7, 1, 1256, 7, [], 1250)
REPLY = AppendEntriesReply(7, True, 2, 1256, 0, 0)


class _Codec(_Twin):
    def setup(self, twin):
        codec = self.codec = twin_module("codec._codec", twin)
        entries = [LogEntry(7, 1001 + i, command=VALUE) for i in range(BATCH)]
        # what a leader sends: the compact batch its log hands out (one decode gives it)
        self.append_entries = codec.decode(codec.encode(AppendEntries(7, 1, 1000, 7, entries, 990)))
        self.append_bytes = codec.encode(self.append_entries)
        self.heartbeat_bytes = codec.encode(HEARTBEAT)
        self.reply_bytes = codec.encode(REPLY)


class EncodeAppendEntries(_Codec):
    """encode an AppendEntries of 256 x 64-byte entries (about 20 KB)."""

    def time_encode(self, twin):
        self.codec.encode(self.append_entries)


class DecodeAppendEntries(_Codec):
    """decode an AppendEntries of 256 x 64-byte entries."""

    def time_decode(self, twin):
        self.codec.decode(self.append_bytes)


class HeartbeatCodec(_Codec):
    """encode, and decode, 256 heartbeats (AppendEntries without entries) and 256 replies."""

    def time_encode_heartbeat(self, twin):
        encode = self.codec.encode
        for _ in range(BATCH):
            encode(HEARTBEAT)

    def time_decode_heartbeat(self, twin):
        decode, data = self.codec.decode, self.heartbeat_bytes
        for _ in range(BATCH):
            decode(data)

    def time_encode_reply(self, twin):
        encode = self.codec.encode
        for _ in range(BATCH):
            encode(REPLY)

    def time_decode_reply(self, twin):
        decode, data = self.codec.decode, self.reply_bytes
        for _ in range(BATCH):
            decode(data)


class FrameReaderFeed(_Codec):
    """FrameReader.feed: 256 heartbeat frames in one chunk; one ~20 KB AppendEntries frame in
    1,448-byte pieces."""

    def setup(self, twin):
        super().setup(twin)
        codec = self.codec
        self.chunk = b"".join(codec.encode_frame(HEARTBEAT) for _ in range(BATCH))
        frame = codec.encode_frame(self.append_entries)
        self.pieces = [frame[i : i + 1448] for i in range(0, len(frame), 1448)]
        self.reader = codec.FrameReader()

    def time_small_frames(self, twin):
        self.reader.feed(self.chunk)

    def time_large_frame_in_pieces(self, twin):
        feed = self.reader.feed
        for piece in self.pieces:
            feed(piece)


# -- the key-value apply kernel -------------------------------------------------------------


class KVApplyBatch(_Twin):
    """apply_batch of one entry of 256 puts (64 clients, 64-byte values) to an empty store, as
    a follower (no replies) and as the leader (response frames built); scan_writes of the 256
    request frames as they arrive at the leader."""

    def setup(self, twin):
        from raftfast.kv.protocol import BATCH_TAG, Op, encode_request

        self.kernel = twin_module("kv._apply", twin)
        self.frames = b"".join(
            encode_request(Op.PUT, i + 1, b"key-%08d" % i, VALUE, client_id=1 + i % 64, seq=1 + i // 64, ack=1)
            for i in range(BATCH)
        )
        self.entry = BATCH_TAG + self.frames

    def time_apply_follower(self, twin):
        self.kernel.apply_batch({}, {}, 100_000, self.entry, None, None)

    def time_apply_leader(self, twin):
        self.kernel.apply_batch({}, {}, 100_000, self.entry, None, [])

    def time_scan_writes(self, twin):
        self.kernel.scan_writes(self.frames, 0, 1 << 20)


# -- the load generator's kernel ------------------------------------------------------------


class LoadgenKernel(_Twin):
    """encode_puts of one send of 256 puts (64-byte values), and of the open loop's, which also
    puts them in flight with their scheduled stamps (the same seqs each call: overwritten);
    parse_responses of the 256 OK responses to them, each stamp popped from a fresh in-flight
    dict and its latency kept."""

    number = 1  # parse_responses empties the dict it is given

    def setup(self, twin):
        import struct
        from array import array

        from raftfast.kv.protocol import NO_VALUE, Status, encode_response

        self.kernel = twin_module("kv._loadgen", twin)
        self.tails = [struct.pack("<HII", 12, len(VALUE), NO_VALUE) + b"key-%08d" % i + VALUE for i in range(1000)]
        self.responses = b"".join(encode_response(seq, Status.OK) for seq in range(1, BATCH + 1))
        self.inflight = dict.fromkeys(range(1, BATCH + 1), 1_000)
        self.stamped: dict = {}
        self.latencies = array("q")

    def time_encode_puts(self, twin):
        self.kernel.encode_puts(self.tails, 0, 7, 1, BATCH, 1)

    def time_encode_puts_in_flight(self, twin):
        self.kernel.encode_puts(self.tails, 0, 7, 1, BATCH, 1, self.stamped, 10**18, 1e9 / 150_000, 1 << 30)

    def time_parse_responses(self, twin):
        self.kernel.parse_responses(self.responses, 0, BATCH + 1, self.inflight, 5_000, 0, 1 << 63, self.latencies)
