"""raftfast chaos: the nemesis schedule, the checks after a run (each fed planted bad inputs:
a checker that cannot fail proves nothing), the fault hook, and a short slice of real runs
against `raftfast serve` processes with fixed seeds."""

from __future__ import annotations

import dataclasses
import json
import random
from types import SimpleNamespace

import pytest

from raftfast.chaos import ChaosConfig, run_chaos
from raftfast.chaos.checks import divergence, lost_writes, tokens
from raftfast.chaos.cluster import ChaosCluster
from raftfast.chaos.nemesis import (
    ELECTION_TIMEOUT_MAX, NEMESES, bridge, deafen, isolate, mute, one_way, parse_nemeses, schedule, split,
)
from raftfast.chaos.netns import available as netns_available
from raftfast.chaos.workload import FINAL_CLIENT
from raftfast.cli import main as cli_main
from raftfast.kv.store import KVStore
from raftfast.runtime.faults import FaultHook
from raftfast.testing.history import Operation, load_history
from raftfast.testing.linearizability import check

# -- the schedule --------------------------------------------------------------------------------


def test_schedule_is_seeded_ordered_and_healed_before_the_end():
    names = list(NEMESES)
    episodes = schedule(names, 60.0, seed=7)
    assert episodes == schedule(names, 60.0, seed=7)
    assert episodes != schedule(names, 60.0, seed=8)
    assert episodes[0].start >= 1.0  # a leader first, then faults
    for before, after in zip(episodes, episodes[1:]):
        assert before.start < before.end < after.start  # one fault at a time, a healed gap
    assert episodes[-1].end <= 60.0 - 0.5


def test_schedule_plays_every_nemesis_once_per_round():
    names = list(NEMESES)
    episodes = schedule(names, 200.0, seed=3)
    first_round = [e.nemesis for e in episodes[: len(names)]]
    assert sorted(first_round) == sorted(names)
    assert len(episodes) > len(names)


def test_pauses_outlast_the_election_timeout():
    episodes = schedule(["pause-leader", "pause-follower"], 300.0, seed=1)
    assert len(episodes) > 20
    assert all(e.end - e.start >= 2 * ELECTION_TIMEOUT_MAX for e in episodes)


def test_short_runs_hold_no_episode_past_the_end():
    assert schedule(["kill-leader"], 1.2, seed=1) == []
    assert all(e.end <= 4.5 for s in range(20) for e in schedule(list(NEMESES), 5.0, seed=s))


def test_parse_nemeses():
    assert parse_nemeses("all") == list(NEMESES)
    assert parse_nemeses("kill-leader, pause-follower,kill-leader") == ["kill-leader", "pause-follower"]
    with pytest.raises(ValueError, match="unknown nemesis bogus"):
        parse_nemeses("kill-leader,bogus")
    with pytest.raises(ValueError):
        parse_nemeses(",")
    with pytest.raises(ValueError):
        schedule(["bogus"], 10.0, seed=1)


def _symmetric(blocked):
    return all(a in blocked[b] for a, peers in blocked.items() for b in peers)


@pytest.mark.parametrize("n", [3, 5])
def test_partitions_are_symmetric_and_shaped_as_named(n):
    members = list(range(1, n + 1))
    rng = random.Random(5)
    for _ in range(50):
        halves = split(members, rng)
        assert _symmetric(halves)
        minority = min(halves.values(), key=len)  # a majority-side node sees the minority blocked
        assert 1 <= len(minority) <= (n - 1) // 2
        ends = bridge(members, rng)
        assert _symmetric(ends) and len(ends) == n - 1  # the bridge talks to everyone
        assert all(len(peers) < n - 1 for peers in ends.values())
    assert isolate(2, members) == {2: set(members) - {2}, **{m: {2} for m in members if m != 2}}


@pytest.mark.parametrize("n", [3, 5])
def test_one_way_cuts_name_one_direction(n):
    members = list(range(1, n + 1))
    others = set(members) - {2}
    assert mute(2, members) == {2: others}  # nobody hears 2; 2 hears everyone
    assert deafen(2, members) == {m: {2} for m in others}  # 2 hears nobody; everyone hears 2
    rng = random.Random(7)
    cuts = [one_way(members, rng) for _ in range(50)]
    assert all(a != b and a in members and b in members for cut in cuts for a, bs in cut.items() for b in bs)
    assert any(not _symmetric_where_cut(cut) for cut in cuts)  # some really are one way


def _symmetric_where_cut(cut):
    return all(a in cut.get(b, ()) for a, bs in cut.items() for b in bs)


def test_a_directed_cut_becomes_each_nodes_drop_lists(tmp_path):
    cluster = ChaosCluster(3, str(tmp_path))
    cluster.partition(mute(1, [1, 2, 3]))
    assert {i: (n.faults["drop_to"], n.faults["drop_from"]) for i, n in cluster.nodes.items() if i <= 3} == {
        1: ([2, 3], []), 2: ([], [1]), 3: ([], [1])}
    cluster.partition({})
    assert all(n.faults["drop_to"] == n.faults["drop_from"] == [] for i, n in cluster.nodes.items() if i <= 3)


# -- the lost-write check ------------------------------------------------------------------------

_T = iter(range(10**9))


def op(client, name, key, value=None, *, status="ok", output=None, expected=None, call=None, ret=None):
    call = next(_T) * 10 if call is None else call
    return Operation(client=client, op=name, key=key, call=call, ret=call + 5 if ret is None else ret,
                     value=value, expected=expected, output=output, status=status)


def test_tokens():
    assert tokens("[1.1][2.7][1.2]") == ["[1.1]", "[2.7]", "[1.2]"]
    assert tokens(None) == []


def test_appends_all_present_once_pass():
    history = [op(1, "append", "a0", "[1.1]"), op(2, "append", "a0", "[2.1]"),
               op(3, "append", "a0", "[3.1]", status="unknown")]
    assert lost_writes(history, {"a0": "[2.1][1.1]"}) == []
    assert lost_writes(history, {"a0": "[2.1][3.1][1.1]"}) == []


def test_planted_lost_append_is_found():
    history = [op(1, "append", "a0", "[1.1]"), op(2, "append", "a0", "[2.1]")]
    [problem] = lost_writes(history, {"a0": "[1.1]"})
    assert "[2.1]" in problem and "missing" in problem
    assert lost_writes(history, {"a0": None})  # the key vanished entirely


def test_planted_duplicate_and_phantom_appends_are_found():
    history = [op(1, "append", "a0", "[1.1]")]
    assert any("2 times" in p for p in lost_writes(history, {"a0": "[1.1][1.1]"}))
    assert any("no client appended" in p for p in lost_writes(history, {"a0": "[1.1][9.9]"}))
    assert any("not a sequence" in p for p in lost_writes(history, {"a0": "[1.1]junk"}))


def test_register_final_value_from_the_last_write_passes():
    history = [op(1, "put", "r1", "[1.1]", call=0, ret=10), op(2, "put", "r1", "[2.1]", call=20, ret=30),
               op(3, "put", "r1", "[3.1]", call=25, ret=40)]  # concurrent with [2.1]
    assert lost_writes(history, {"r1": "[2.1]"}) == []
    assert lost_writes(history, {"r1": "[3.1]"}) == []


def test_planted_overwritten_register_is_found():
    history = [op(1, "put", "r1", "[1.1]", call=0, ret=10), op(2, "put", "r1", "[2.1]", call=20, ret=30)]
    [problem] = lost_writes(history, {"r1": "[1.1]"})
    assert "[2.1]" in problem and "lost" in problem
    # a successful cas is a write too
    history.append(op(3, "cas", "r1", "[3.1]", expected="[2.1]", output="ok", call=40, ret=50))
    assert lost_writes(history, {"r1": "[2.1]"})
    # ...but a cas that answered "fail" wrote nothing
    history[-1] = op(3, "cas", "r1", "[3.1]", expected="[9.9]", output="fail", call=40, ret=50)
    assert lost_writes(history, {"r1": "[2.1]"}) == []


def test_an_unknown_write_may_land_last():
    history = [op(1, "put", "r1", "[1.1]", status="unknown", call=0, ret=10),
               op(2, "put", "r1", "[2.1]", call=20, ret=30)]
    assert lost_writes(history, {"r1": "[1.1]"}) == []


def test_planted_phantom_register_value_is_found():
    history = [op(1, "put", "r1", "[1.1]")]
    [problem] = lost_writes(history, {"r1": "[7.7]"})
    assert "never written" in problem


def test_absent_register_needs_a_delete_that_can_come_last():
    put = op(1, "put", "r1", "[1.1]", call=0, ret=10)
    [problem] = lost_writes([put], {"r1": None})
    assert "[1.1]" in problem and "absent" in problem
    assert lost_writes([put, op(2, "delete", "r1", call=20, ret=30)], {"r1": None}) == []
    assert lost_writes([put, op(2, "delete", "r1", status="unknown", call=-5, ret=-1)], {"r1": None}) == []
    early_delete = op(2, "delete", "r1", call=-20, ret=-10)  # returned before the put was called
    assert lost_writes([put, early_delete], {"r1": None})
    assert lost_writes([op(1, "put", "r1", "[1.1]", status="unknown")], {"r1": None}) == []


# -- replica divergence ------------------------------------------------------------------------


def status(node, commit, digest):
    return {"id": node, "commit_index": commit, "applied_index": commit, "digest": digest}


def test_equal_digests_pass():
    assert divergence({1: status(1, 50, "aa"), 2: status(2, 50, "aa"), 3: status(3, 50, "aa")}) == []


def test_planted_divergence_is_found():
    [problem] = divergence({1: status(1, 50, "aa"), 2: status(2, 50, "bb"), 3: status(3, 50, "aa")})
    assert "commit index 50" in problem and "[2]" in problem and "[1, 3]" in problem


def test_store_digest_depends_on_content_not_insertion_order():
    a, b = KVStore(), KVStore()
    a.data = {b"x": b"1", b"y": b"2"}
    b.data = {b"y": b"2", b"x": b"1"}
    assert a.digest() == b.digest()
    b.data[b"y"] = b"3"
    assert a.digest() != b.digest()
    b.data[b"y"] = b"2"
    b.sessions[7] = [0, {1: (0, b"")}]
    assert a.digest() != b.digest()


# -- the fault hook --------------------------------------------------------------------------------


def _hook(tmp_path, spec):
    path = tmp_path / "faults"
    path.write_text(json.dumps(spec))
    server = SimpleNamespace(id=1, transport=SimpleNamespace(drop_to=set(), drop_from=set()))
    return FaultHook(server, str(path)), server, path  # type: ignore[arg-type]


def _dropped(server):
    return server.transport.drop_to, server.transport.drop_from


def test_fault_hook_blocks_and_unblocks_peers(tmp_path):
    hook, server, path = _hook(tmp_path, {"blocked": [2, 3]})
    hook.reload()
    assert _dropped(server) == ({2, 3}, {2, 3})
    path.write_text(json.dumps({"blocked": []}))
    hook.reload()
    assert _dropped(server) == (set(), set())


def test_fault_hook_cuts_one_way(tmp_path):
    hook, server, path = _hook(tmp_path, {"drop_to": [2], "drop_from": [3], "blocked": [4]})
    hook.reload()
    assert _dropped(server) == ({2, 4}, {3, 4})


@pytest.mark.parametrize("spec", [
    "{not json",
    "[2, 3]",
    '{"blocked": 2}',
    '{"drop_to": ["2"]}',
    '{"drop_from": [true]}',
    '{"blocked": [2], "partition": [3]}',
])
def test_fault_hook_keeps_its_faults_on_a_bad_file(tmp_path, caplog, spec):
    hook, server, path = _hook(tmp_path, {"blocked": [2]})
    hook.reload()
    path.write_text(spec)
    hook.reload()
    assert "ignoring fault file" in caplog.text
    path.unlink()
    hook.reload()
    assert _dropped(server) == ({2}, {2})


def test_a_node_that_exits_on_its_own_is_a_crash(tmp_path):
    cluster = ChaosCluster(3, str(tmp_path))
    node = cluster.nodes[1]
    node.process = SimpleNamespace(poll=lambda: -9, returncode=-9)  # our SIGKILL
    cluster.check_exit(node)
    assert cluster.crashes == []
    node.process = SimpleNamespace(poll=lambda: 1, returncode=1)
    cluster.check_exit(node)
    assert cluster.crashes == [f"node 1 exited on its own with code 1; see {node.log_path}"]
    assert node.process is None  # reported once


# -- the command -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--nodes", "4"], "invalid choice: 4"),
    (["--nemesis", "kill-leader,bogus"], "unknown nemesis bogus"),
    (["--duration", "0"], "must be positive"),
    (["--runs", "0"], "below the minimum"),
    (["--sync", "sometimes"], "invalid choice: 'sometimes'"),
])
def test_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["chaos", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# -- the slice: real processes, fixed seeds ----------------------------------------------------------

_NETNS, _ = netns_available()
SLICE = [
    (1, ["kill-leader"]),
    (2, ["partition-leader", "netns-partition"] if _NETNS else ["partition-leader", "partition-bridge"]),
    (3, ["pause-follower", "transfer-leader"]),
    (4, ["member-remove", "member-remove-leader"]),
    (5, ["leader-deaf", "leader-mute"]),
    # the leader's fsync beside replication (thesis §10.2.1) under kills and a partition
    (6, ["kill-leader", "kill-follower", "partition-leader"], "pipelined"),
]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed, nemeses, sync", [(*s, "inline")[:3] for s in SLICE],
                         ids=["+".join(s[1]) + ("" if len(s) == 2 else f"-{s[2]}") for s in SLICE])
def test_chaos_slice(seed, nemeses, sync, tmp_path):
    history = str(tmp_path / "history.jsonl")
    result = run_chaos(ChaosConfig(duration=8.0, nemeses=nemeses, seed=seed, history=history, sync=sync))
    report = "\n".join([result.explanation, *result.lost, *result.diverged, *result.errors, *result.log])
    assert result.episodes, report  # faults were injected
    assert result.linearizable is True, report
    assert result.lost == [] and result.diverged == [] and result.errors == [], report
    assert result.ops > 200, report
    _planted_loss_is_caught(load_history(history))


def _planted_loss_is_caught(history):
    """The same real history, with one acknowledged append taken out of a final read: both
    the linearizability checker and the lost-write check must object."""
    final = {o.key: o for o in history if o.client >= FINAL_CLIENT and o.status == "ok"}
    acked = {o.value for o in history if o.op == "append" and o.status == "ok"}
    read = next(o for o in final.values() if set(tokens(o.output)) & acked)
    victim = next(t for t in tokens(read.output) if t in acked)
    tampered = dataclasses.replace(read, output=read.output.replace(victim, "", 1))
    history = [tampered if o is read else o for o in history]
    assert check(history, timeout=120).linearizable is False
    outputs = {o.key: o.output for o in history if o.client >= FINAL_CLIENT and o.status == "ok"}
    assert any(victim in p for p in lost_writes(history, outputs))
