"""The compiled and the pure-Python builds are the same program.

Random simulations (raftfast.testing) are driven through both builds, every action each node
returns is encoded (messages with raftfast.framing), and the two traces must be identical
byte for byte. The pure build runs in a child process with RAFTFAST_NO_EXTENSIONS=1, so
nothing compiled can leak into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Dict, Iterable, List

import pytest

import raftfast

SEEDS = range(1, 201)
STEPS = 150


def encode_action(action: object) -> bytes:
    """A canonical byte form of any action (unknown kinds fail loudly)."""
    from raftfast import Action
    from raftfast.framing import encode

    kind = type(action)
    if kind is Action.Send:
        return b"S%d:" % action.to + encode(action.message)
    if kind is Action.Apply:
        return b"A%d:%d:" % (action.index, action.term) + action.command
    if kind is Action.Snapshot:
        return b"H%d:%d" % (action.index, action.term)
    if kind is Action.RestoreSnapshot:
        return b"R%d:%d:" % (action.index, action.term) + action.data
    if kind is Action.MembershipChanged:
        return b"M" + repr((tuple(action.members), tuple(action.learners))).encode()
    if kind is Action.ReadReady:
        return b"Y" + repr((action.request_id, action.index)).encode()
    if kind is Action.ReadFailed:
        return b"F" + repr((action.request_id, action.leader)).encode()
    if kind is Action.Rejected:
        return b"X" + repr((type(action.event).__name__, type(action.error).__name__, str(action.error))).encode()
    raise AssertionError(f"unknown action {action!r}")


def trace_digests(seeds: Iterable[int], steps: int = STEPS) -> Dict[int, str]:
    """Per seed, a digest of every encoded action of a random 3- or 5-node simulation."""
    from raftfast.testing.simulator import random_cluster

    digests = {}
    for seed in seeds:
        cluster = random_cluster(seed, 3 if seed % 4 else 5)
        digest = hashlib.blake2b(digest_size=16)
        carry_out = cluster._carry_out

        def recording(node, actions: List[object], digest=digest, carry_out=carry_out) -> None:
            digest.update(b"%d|" % node.id)
            for action in actions:
                digest.update(encode_action(action))
                digest.update(b"\n")
            carry_out(node, actions)

        cluster._carry_out = recording
        cluster.run(steps, chaos=True)
        digests[seed] = digest.hexdigest()
    return digests


@pytest.mark.skipif(raftfast.IMPLEMENTATION != "cython", reason="needs the compiled build")
def test_compiled_and_pure_builds_produce_identical_action_traces():
    env = dict(os.environ, RAFTFAST_NO_EXTENSIONS="1")
    child = subprocess.run(
        [sys.executable, "-c", "import json, sys; from tests.test_differential import trace_digests; "
         f"print(json.dumps(trace_digests(range({SEEDS.start}, {SEEDS.stop}))))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    pure = {int(k): v for k, v in json.loads(child.stdout.strip().splitlines()[-1]).items()}
    compiled = trace_digests(SEEDS)
    differing = [seed for seed in SEEDS if pure[seed] != compiled[seed]]
    assert not differing, f"builds diverge on seeds {differing[:10]} (of {len(differing)})"


def test_trace_digest_notices_a_different_run():
    """The comparison above can fail: different seeds give different digests."""
    digests = trace_digests([1, 2], steps=60)
    assert digests[1] != digests[2]
    assert trace_digests([1], steps=60)[1] == digests[1]
