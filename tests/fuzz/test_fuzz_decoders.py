"""Fuzzing the decoders that read the network: the peer port (hello, frames, messages), the
client port (requests, before and after authentication) and the client library (replies).

Hypothesis drives the real protocol objects over fake transports (`fuzz_harness.py`) with
random bytes and with valid frames that are then cut, mutated and spliced, delivered in random
chunks. Bounded: 120 examples each, a few seconds in all. `atheris_decoders.py` runs
the same harness under atheris, when it is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_harness import TOKEN, feed_client, feed_gate, feed_peer, feed_replies
from raftfast import framing
from raftfast.kv.protocol import Op, encode_request, encode_response
from raftfast.messages import AppendEntries, AppendEntriesReply, RequestVote
from raftfast.runtime.handshake import Hello
from raftfast.types import LogEntry

pytestmark = pytest.mark.timeout(60)

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "little") + payload


@st.composite
def _mutated(draw, valid: st.SearchStrategy) -> bytes:
    """A valid stream, then some bytes flipped, a cut, or garbage spliced in."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "splice"]))
        if kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif kind == "splice":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(max_size=16))
    return bytes(data)


@st.composite
def _chunks(draw, stream: st.SearchStrategy) -> list:
    """`stream` delivered in random pieces, as reads from a socket arrive."""
    data = draw(stream)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


_ids = st.integers(1, 5)
_messages = st.one_of(
    st.builds(lambda t, c: RequestVote(t, c, 0, 0), st.integers(0, 9), _ids),
    st.builds(lambda t, f: AppendEntriesReply(t, True, f, 3), st.integers(0, 9), _ids),
    st.builds(lambda t, l, n: AppendEntries(t, l, 0, 0, [LogEntry(1, i + 1, command=b"c") for i in range(n)], 0),
              st.integers(1, 9), _ids, st.integers(0, 20)),
)
_peer_valid = st.builds(
    lambda hello, messages: hello + b"".join(framing.encode_frame(m) for m in messages),
    st.builds(lambda s, t, cluster: _frame(Hello(cluster, s, t).encode()), _ids, _ids,
              st.sampled_from(["raftfast", "other"])),
    st.lists(_messages, max_size=4),
)
_peer_stream = st.one_of(st.binary(max_size=300), _mutated(_peer_valid))

_requests = st.builds(
    lambda op, rid, key, value, cid, seq: encode_request(op, rid, key, value, None, cid, seq, seq),
    st.integers(0, 14), st.integers(0, 2**32 - 1), st.binary(max_size=12), st.binary(max_size=24),
    st.sampled_from([0, 7, 2**63]), st.integers(0, 3),
)
_client_valid = st.lists(st.one_of(_requests, st.just(encode_request(Op.AUTH, 0, TOKEN))), max_size=6).map(b"".join)
_client_stream = st.one_of(st.binary(max_size=300), _mutated(_client_valid))

_replies_valid = st.lists(
    st.builds(encode_response, st.integers(0, 9), st.integers(0, 255), st.binary(max_size=20)), max_size=6
).map(b"".join)


@FUZZ
@given(_chunks(_peer_stream))
def test_peer_port_survives_any_bytes(chunks):
    feed_peer(chunks)


@FUZZ
@given(_chunks(_client_stream), st.booleans())
def test_client_port_survives_any_bytes(chunks, leader):
    feed_client(chunks, leader)


@FUZZ
@given(_chunks(_client_stream))
def test_auth_gate_survives_any_bytes_and_wants_the_token(chunks):
    feed_gate(chunks)


@FUZZ
@given(_chunks(st.one_of(st.binary(max_size=200), _mutated(_replies_valid))))
def test_client_library_survives_any_reply_bytes(chunks):
    feed_replies(chunks)


def test_atheris_target_runs_when_atheris_is_installed():
    pytest.importorskip("atheris")
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(here)),
                                                                    here, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, os.path.join(here, "atheris_decoders.py"), "-runs=2000", "-seed=1", "-max_total_time=20"],
                            capture_output=True, text=True, timeout=50, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
