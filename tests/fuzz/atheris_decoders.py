"""An atheris (libFuzzer) target for the network decoders; atheris is optional, not a
dependency of raftfast.

    pip install atheris
    python tests/fuzz/atheris_decoders.py [-max_total_time=60] [-runs=N] [CORPUS_DIR]

The first byte picks the decoder (peer port, client port, auth gate, client library), the
next ones where the input is cut into reads; the rest is the stream. A crash is any exception
or failed check in `fuzz_harness`.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["raftfast", "fuzz_harness"]):  # not the stdlib: slow to instrument
    from fuzz_harness import feed_client, feed_gate, feed_peer, feed_replies

_FEEDERS = (feed_peer, feed_client, feed_gate, feed_replies)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    feed = _FEEDERS[provider.ConsumeIntInRange(0, len(_FEEDERS) - 1)]
    cuts = sorted(provider.ConsumeIntInRange(0, 512) for _ in range(provider.ConsumeIntInRange(0, 4)))
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    bounds = [0, *(c for c in cuts if c < len(stream)), len(stream)]
    feed([stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a])


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
