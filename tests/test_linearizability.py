"""The linearizability checker and the history format (issue 6, parts 1 and 2)."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from raftfast.errors import RaftError
from raftfast.testing.linearizability import (
    CheckResult,
    HistoryError,
    HistoryWriter,
    Operation,
    check,
    load_history,
    main,
)

DATA = Path(__file__).parent / "data" / "linearizability"


def op(client: int, name: str, call: int, ret: int, *, key: str = "x", value: str | None = None,
       expected: str | None = None, output: str | None = None, status: str = "ok") -> Operation:
    return Operation(client=client, op=name, key=key, call=call, ret=ret, value=value,
                     expected=expected, output=output, status=status)  # type: ignore[arg-type]


def put(c: int, v: str, call: int, ret: int, **kw) -> Operation:
    return op(c, "put", call, ret, value=v, **kw)


def append(c: int, v: str, call: int, ret: int, **kw) -> Operation:
    return op(c, "append", call, ret, value=v, **kw)


def get(c: int, out: str | None, call: int, ret: int, **kw) -> Operation:
    return op(c, "get", call, ret, output=out, **kw)


def delete(c: int, call: int, ret: int, **kw) -> Operation:
    return op(c, "delete", call, ret, **kw)


def cas(c: int, exp: str, v: str, out: str | None, call: int, ret: int, **kw) -> Operation:
    return op(c, "cas", call, ret, value=v, expected=exp, output=out, **kw)


# --- a simulated linearizable store, for histories known to be linearizable -----------------

def generate_history(rng: random.Random, *, n_ops: int, n_clients: int, n_keys: int,
                     p_unknown: float = 0.0, p_fail: float = 0.0,
                     max_latency: int = 100) -> list[Operation]:
    """Clients issue one op at a time with random latencies (so ops overlap at random); each op
    takes effect at a random instant inside its interval, in that order, on a sequential
    store. A `fail` op never takes effect; an `unknown` write takes effect at a random time
    after its call (possibly after it returned) or never. Write values are unique."""
    keys = [f"k{i}" for i in range(n_keys)]
    plans = []  # (effect time or None, tie-break, fields)
    for c in range(n_clients):
        t = rng.randrange(10)
        for seq in range(n_ops // n_clients + (c < n_ops % n_clients)):
            call = t + rng.randrange(1, 10)
            ret = call + rng.randrange(max_latency)
            t = ret
            r = rng.random()
            status = "unknown" if r < p_unknown else "fail" if r < p_unknown + p_fail else "ok"
            name = rng.choices(["get", "put", "append", "delete", "cas"], [40, 15, 20, 5, 20])[0]
            if status == "ok":
                at: int | None = rng.randint(call, ret)
            elif status == "unknown" and rng.random() < 0.5:
                at = call + rng.randrange(4 * max_latency)
            else:
                at = None
            value = f"[{c}.{seq}]" if name in ("put", "append", "cas") else None
            plans.append((at, rng.random(), dict(client=c, op=name, key=rng.choice(keys),
                                                  call=call, ret=ret, status=status, value=value)))
    store: dict[str, str] = {}
    written: dict[str, list[str]] = {k: [] for k in keys}
    ops = []
    for at, _, f in sorted(plans, key=lambda p: (p[0] is None, p[0] or 0, p[1])):
        key, name, value = f["key"], f["op"], f["value"]
        current = store.get(key)
        expected = output = None
        if name == "cas":  # half the time the current value, else a stale or foreign one
            if current is not None and rng.random() < 0.5:
                expected = current
            else:
                expected = rng.choice(written[key] or ["never"])
        if at is not None:
            if name == "get":
                output = current
            elif name == "put":
                store[key] = value
            elif name == "append":
                store[key] = (current or "") + value
            elif name == "delete":
                store.pop(key, None)
            else:
                output = "ok" if current == expected else "fail"
                if output == "ok":
                    store[key] = value
            if value is not None:
                written[key].append(value)
        if f["status"] != "ok":  # the client never saw a result
            output = "junk" if name == "get" else None
        ops.append(Operation(expected=expected, output=output, **f))
    ops.sort(key=lambda o: o.call)
    return ops


def corrupt_a_read(rng: random.Random, history: list[Operation]) -> Operation | None:
    """Change one successful get's result to a value no one wrote; returns the changed op."""
    reads = [i for i, o in enumerate(history) if o.op == "get" and o.status == "ok"]
    if not reads:
        return None
    i = rng.choice(reads)
    history[i] = dataclasses.replace(history[i], output="never written")
    return history[i]


# --- an exhaustive reference, for small histories --------------------------------------------

def _step(o: Operation, state: str | None) -> tuple[bool, str | None]:
    if o.op == "get":
        return state == o.output, state
    if o.op == "put":
        return True, o.value
    if o.op == "append":
        return True, (o.value if state is None else state + o.value)  # type: ignore[operator]
    if o.op == "delete":
        return True, None
    if o.status == "unknown" or o.output is None:
        return True, (o.value if state == o.expected else state)
    if o.output == "ok":
        return state == o.expected, o.value
    return state != o.expected, state


def reference_check(history: list[Operation]) -> bool:
    """Try every order: an op may go next unless a definite op still to place returned before
    it was called; unknown writes are optional; fail ops and unknown reads are left out."""
    keys = {o.key for o in history}
    for key in keys:
        known = [o for o in history if o.key == key and o.status == "ok"]
        unknown = [o for o in history if o.key == key and o.status == "unknown" and o.op != "get"]

        def search(left: frozenset[int], spare: frozenset[int], state: str | None) -> bool:
            if not left:
                return True
            for i in left:
                if any(known[p].ret < known[i].call for p in left):
                    continue
                ok, new = _step(known[i], state)
                if ok and search(left - {i}, spare, new):
                    return True
            for j in spare:
                if any(known[p].ret < unknown[j].call for p in left):
                    continue
                if search(left, spare - {j}, _step(unknown[j], state)[1]):
                    return True
            return False

        if not search(frozenset(range(len(known))), frozenset(range(len(unknown))), None):
            return False
    return True


# --- golden files ----------------------------------------------------------------------------

GOLDEN = [("c01-ok", True), ("c01-bad", False), ("c10-ok", True), ("c10-bad", False),
          ("c50-ok", True), ("c50-bad", False)]


@pytest.mark.parametrize("name,verdict", GOLDEN)
def test_golden_files(name: str, verdict: bool) -> None:
    history = load_history(DATA / f"{name}.jsonl")
    result = check(history)
    assert result.linearizable is verdict
    if verdict:
        assert result.keys_checked == len({o.key for o in history})
        assert result.failing_key is None and result.culprit is None
    else:
        assert result.failing_key is not None
        assert result.culprit in history and result.culprit.key == result.failing_key
        assert result.failing_key in result.explanation


# --- hand-made histories ---------------------------------------------------------------------

def verdict(*ops: Operation) -> bool | None:
    return check(list(ops)).linearizable


def test_sequential_history_is_linearizable() -> None:
    assert verdict(put(0, "1", 0, 10), get(1, "1", 20, 30), append(0, "2", 40, 50),
                   get(1, "12", 60, 70), delete(0, 80, 90), get(1, None, 100, 110))


def test_stale_read() -> None:
    stale = get(2, "1", 40, 50)
    result = check([put(0, "1", 0, 10), put(1, "2", 20, 30), stale])
    assert result.linearizable is False
    assert result.culprit == stale
    assert [o.value for o in result.partial] == ["1", "2"]
    assert "'2'" in result.explanation


def test_read_from_the_future() -> None:
    assert verdict(get(0, "1", 0, 10), put(1, "1", 20, 30)) is False


def test_lost_write() -> None:
    assert verdict(put(0, "1", 0, 10), get(1, None, 20, 30)) is False
    assert verdict(put(0, "1", 0, 10), put(0, "2", 20, 30), get(1, "1", 40, 50),
                   get(1, "2", 60, 70)) is False


def test_failed_write_made_visible() -> None:
    assert verdict(put(0, "1", 0, 10, status="fail"), get(1, "1", 20, 30)) is False
    assert verdict(put(0, "1", 0, 10), append(0, "2", 20, 30, status="fail"),
                   get(1, "12", 40, 50)) is False
    assert verdict(put(0, "1", 0, 10), delete(0, 20, 30, status="fail"), get(1, None, 40, 50)
                   ) is False


def test_failed_write_not_visible() -> None:
    assert verdict(put(0, "1", 0, 10, status="fail"), get(1, None, 20, 30))


def test_unknown_write_that_appears_later() -> None:
    # It timed out at 10 but took effect after 30: an unknown write has no deadline.
    assert verdict(put(0, "1", 0, 10, status="unknown"), get(1, None, 20, 30),
                   get(1, "1", 40, 50))


def test_unknown_write_that_never_appears() -> None:
    assert verdict(put(0, "1", 0, 10, status="unknown"), get(1, None, 20, 30),
                   get(1, None, 100, 110))
    assert verdict(put(0, "1", 0, 10), append(0, "2", 20, 30, status="unknown"),
                   get(1, "1", 40, 50), put(0, "3", 60, 70), get(1, "3", 80, 90))


def test_unknown_write_takes_effect_at_most_once() -> None:
    assert verdict(put(0, "1", 0, 10, status="unknown"), get(1, "1", 20, 30),
                   get(1, None, 40, 50)) is False
    assert verdict(put(0, "a", 0, 10), append(0, "b", 20, 30, status="unknown"),
                   get(1, "abb", 40, 50)) is False


def test_unknown_write_cannot_act_before_its_call() -> None:
    assert verdict(get(1, "1", 0, 10), put(0, "1", 20, 30, status="unknown")) is False


def test_unknown_read_constrains_nothing() -> None:
    assert verdict(put(0, "1", 0, 10), get(1, "garbage", 20, 30, status="unknown"),
                   get(1, "1", 40, 50))
    assert verdict(put(0, "1", 0, 10), get(1, "garbage", 20, 30, status="fail"))


def test_non_monotonic_reads() -> None:
    # put 2 overlaps both reads, but once one read saw 2 a later read cannot see 1 again.
    assert verdict(put(0, "1", 0, 10), put(1, "2", 0, 100), get(2, "2", 20, 30),
                   get(3, "1", 40, 50)) is False
    # Overlapping reads may see the values in either order.
    assert verdict(put(0, "1", 0, 10), put(1, "2", 0, 100), get(2, "2", 20, 50),
                   get(3, "1", 25, 45))


def test_concurrent_writes_either_order() -> None:
    writes = [put(0, "1", 0, 50), put(1, "2", 10, 60)]
    assert verdict(*writes, get(2, "1", 70, 80))
    assert verdict(*writes, get(2, "2", 70, 80))
    assert verdict(*writes, get(2, "2", 70, 80), get(2, "1", 90, 95)) is False


def test_concurrent_appends_reveal_their_order() -> None:
    assert verdict(append(0, "a", 0, 50), append(1, "b", 10, 60), get(2, "ba", 70, 80))
    assert verdict(append(0, "a", 0, 50), append(1, "b", 10, 60), get(2, "ab", 20, 30),
                   get(3, "ba", 70, 80)) is False


def test_touching_intervals_are_concurrent() -> None:
    assert verdict(put(0, "1", 0, 10), get(1, None, 10, 20))


def test_cas() -> None:
    assert verdict(put(0, "a", 0, 10), cas(1, "a", "b", "ok", 20, 30), get(2, "b", 40, 50))
    assert verdict(put(0, "a", 0, 10), cas(1, "z", "b", "fail", 20, 30), get(2, "a", 40, 50))
    # A cas that should have succeeded reported failure, and the reverse.
    assert verdict(put(0, "a", 0, 10), cas(1, "a", "b", "fail", 20, 30)) is False
    assert verdict(put(0, "a", 0, 10), cas(1, "z", "b", "ok", 20, 30)) is False
    # A failed cas changes nothing; a cas on an absent key cannot succeed.
    assert verdict(put(0, "a", 0, 10), cas(1, "z", "b", "fail", 20, 30), get(2, "b", 40, 50)
                   ) is False
    assert verdict(cas(1, "a", "b", "ok", 0, 10)) is False
    assert verdict(cas(1, "a", "b", "fail", 0, 10), get(2, None, 20, 30))
    # A failed cas overlapping the write that made it fail.
    assert verdict(put(0, "a", 0, 10), put(1, "c", 20, 60), cas(2, "a", "b", "fail", 30, 40),
                   get(3, "c", 70, 80))


def test_cas_with_unknown_outcome() -> None:
    assert verdict(put(0, "a", 0, 10), cas(1, "a", "b", None, 20, 30, status="unknown"),
                   get(2, "b", 40, 50))
    assert verdict(put(0, "a", 0, 10), cas(1, "a", "b", None, 20, 30, status="unknown"),
                   get(2, "a", 40, 50))
    assert verdict(put(0, "a", 0, 10), cas(1, "z", "b", None, 20, 30, status="unknown"),
                   get(2, "b", 40, 50)) is False
    # status ok with no output: it ran, and its comparison decided what it did.
    assert verdict(put(0, "a", 0, 10), cas(1, "a", "b", None, 20, 30), get(2, "b", 40, 50))
    assert verdict(put(0, "a", 0, 10), cas(1, "a", "b", None, 20, 30), get(2, "a", 40, 50)
                   ) is False


def test_unknown_write_can_explain_a_failed_cas() -> None:
    assert verdict(put(0, "a", 0, 10), put(1, "b", 5, 15, status="unknown"),
                   cas(2, "a", "c", "fail", 20, 30), put(0, "d", 40, 50), get(2, "d", 60, 70))
    assert verdict(put(0, "a", 0, 10), cas(2, "a", "c", "fail", 20, 30)) is False


def test_keys_are_independent() -> None:
    bad = get(1, "1", 20, 30, key="y")
    result = check([put(0, "1", 0, 10, key="x"), bad, get(1, "1", 40, 50, key="x")])
    assert result.linearizable is False
    assert (result.failing_key, result.culprit) == ("y", bad)
    assert result.keys_checked >= 1


def test_empty_history() -> None:
    assert check([]) == CheckResult(linearizable=True, keys_checked=0)


def test_timeout_gives_no_verdict() -> None:
    history = generate_history(random.Random(1), n_ops=200, n_clients=4, n_keys=4)
    result = check(history, timeout=0)
    assert result.linearizable is None
    assert result.keys_checked < 4 and "timed out" in result.explanation


# --- generated histories ---------------------------------------------------------------------

@pytest.mark.slow
def test_20k_ops_20_keys_10_clients() -> None:
    history = generate_history(random.Random(20), n_ops=20_000, n_clients=10, n_keys=20)
    assert check(history).linearizable is True
    bad = corrupt_a_read(random.Random(20), history)
    assert bad is not None
    result = check(history)
    assert result.linearizable is False
    assert result.culprit == bad


@pytest.mark.slow
def test_20k_ops_with_unknown_and_failed_outcomes() -> None:
    history = generate_history(random.Random(21), n_ops=20_000, n_clients=10, n_keys=20,
                               p_unknown=0.05, p_fail=0.05)
    assert check(history).linearizable is True
    bad = corrupt_a_read(random.Random(21), history)
    assert check(history).failing_key == bad.key  # type: ignore[union-attr]


history_shapes = dict(
    seed=st.integers(0, 2**32 - 1), n_ops=st.integers(1, 120), n_clients=st.integers(1, 8),
    n_keys=st.integers(1, 3), p_unknown=st.sampled_from([0.0, 0.1, 0.3]),
    p_fail=st.sampled_from([0.0, 0.1]), max_latency=st.sampled_from([1, 20, 100]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**history_shapes)
def test_generated_histories_are_linearizable(seed: int, **shape) -> None:
    history = generate_history(random.Random(seed), **shape)
    assert check(history).linearizable is True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**history_shapes)
def test_a_corrupted_read_is_not_linearizable(seed: int, **shape) -> None:
    rng = random.Random(seed)
    history = generate_history(rng, **shape)
    bad = corrupt_a_read(rng, history)
    assume(bad is not None)
    result = check(history)
    assert result.linearizable is False
    assert result.failing_key == bad.key  # type: ignore[union-attr]


@st.composite
def small_ops(draw: st.DrawFn) -> Operation:
    name = draw(st.sampled_from(["get", "put", "append", "delete", "cas"]))
    call = draw(st.integers(0, 30))
    values = st.sampled_from(["a", "b", "ab"])
    return Operation(
        client=0, op=name, key="k", call=call, ret=call + draw(st.integers(0, 15)),
        status=draw(st.sampled_from(["ok", "ok", "unknown", "fail"])),
        value=draw(values) if name in ("put", "append", "cas") else None,
        expected=draw(values) if name == "cas" else None,
        output=(draw(st.sampled_from([None, "a", "b", "ab", "ba", "aab"])) if name == "get"
                else draw(st.sampled_from(["ok", "fail", None])) if name == "cas" else None))


@settings(max_examples=400, deadline=None)
@given(st.lists(small_ops(), max_size=8))
def test_verdict_matches_exhaustive_search(history: list[Operation]) -> None:
    # Arbitrary small histories (with overlapping values, so substrings collide) check every
    # shortcut the search takes against trying every order.
    assert check(history).linearizable is reference_check(history)


# --- the history format ----------------------------------------------------------------------

def test_golden_style_lines_are_accepted() -> None:
    lines = ['{"client": 0, "op": "append", "key": "0", "call": 0, "value": "x", "return": 1}',
             "",
             '{"client": 1, "op": "get", "key": "0", "call": 2, "return": 3, "output": null,'
             ' "extra": [1, 2]}']
    assert load_history(lines) == [
        append(0, "x", 0, 1, key="0"), get(1, None, 2, 3, key="0")]


def test_all_fields_round_trip(tmp_path: Path) -> None:
    history = [put(0, "v", 1, 2), get(1, "v", 3, 4), append(2, "w", 5, 6, status="unknown"),
               delete(3, 7, 8, status="fail"), cas(4, "vw", "z", "ok", 9, 10),
               cas(5, "q", "z", "fail", 11, 12), cas(6, "z", "y", None, 13, 14, status="unknown")]
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:
        for o in history:
            w.write(o)
    assert load_history(path) == history
    assert load_history(str(path)) == history
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"client": 0, "op": "put", "key": "x", "value": "v", "output": None,
                     "call": 1, "return": 2, "status": "ok"}


def test_writer_stamps_call_and_return(tmp_path: Path) -> None:
    ticks = iter(range(100, 1000, 100))
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, clock=lambda: next(ticks)) as w:
        p1 = w.invoke(1, "put", "k", "v")
        p2 = w.invoke(2, "get", "k")
        assert p1.ok() == put(1, "v", 100, 300, key="k")
        p2.unknown()
        w.invoke(3, "cas", "k", "v", expected="u").fail()
        with pytest.raises(RuntimeError):
            p1.ok()
        with pytest.raises(ValueError):
            w.invoke(1, "put", "k")
        with pytest.raises(ValueError):
            w.invoke(1, "rename", "k", "v")  # type: ignore[arg-type]
    assert load_history(path) == [
        put(1, "v", 100, 300, key="k"), get(2, None, 200, 400, key="k", status="unknown"),
        cas(3, "u", "v", None, 500, 600, key="k", status="fail")]
    with HistoryWriter(path, clock=lambda: 0) as w:  # appends, never truncates
        w.invoke(4, "delete", "k").ok()
    assert len(load_history(path)) == 4


GOOD = {"client": 1, "op": "put", "key": "k", "value": "v", "call": 1, "return": 2}


@pytest.mark.parametrize("line,field,words", [
    ('{"client": 1, "op": ', None, "invalid JSON"),
    ("[1, 2]", None, "JSON object"),
    (json.dumps({**GOOD, "op": "rename"}), "op", "unknown op"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "key"}), "key", "missing"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "client"}), "client", "missing"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "return"}), "return", "missing"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "value"}), "value", "missing"),
    (json.dumps({**GOOD, "call": 5, "return": 4}), "return", "before call"),
    (json.dumps({**GOOD, "client": "1"}), "client", "integer"),
    (json.dumps({**GOOD, "client": True}), "client", "integer"),
    (json.dumps({**GOOD, "call": 1.5}), "call", "integer"),
    (json.dumps({**GOOD, "key": 3}), "key", "string"),
    (json.dumps({**GOOD, "value": 3}), "value", "string"),
    (json.dumps({**GOOD, "output": 3}), "output", "string"),
    (json.dumps({**GOOD, "status": "maybe"}), "status", "one of"),
    (json.dumps({**GOOD, "op": "cas"}), "expected", "missing"),
    (json.dumps({**GOOD, "op": "cas", "expected": None}), "expected", "string"),
    (json.dumps({**GOOD, "op": "cas", "expected": "u", "output": "yes"}), "output", "ok"),
    (json.dumps({"client": 1, "op": "get", "key": "k", "call": 1, "return": 2}), "output",
     "missing"),
])
def test_malformed_lines(line: str, field: str | None, words: str) -> None:
    with pytest.raises(HistoryError) as info:
        load_history([json.dumps(GOOD), "", line])
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, RaftError)
    assert (err.line, err.field) == (3, field)
    assert words in str(err) and str(err).startswith("line 3")


def test_lenient_on_optional_fields() -> None:
    [unknown_get, write] = load_history([
        '{"client": 1, "op": "get", "key": "k", "call": 1, "return": 2, "status": "unknown"}',
        '{"client": 1, "op": "delete", "key": "k", "call": 3, "return": 4, "value": "ignored"}'])
    assert unknown_get.output is None and unknown_get.status == "unknown"
    assert write == delete(1, 3, 4, key="k")


# --- command line ----------------------------------------------------------------------------

def test_cli_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok, bad = DATA / "c01-ok.jsonl", DATA / "c01-bad.jsonl"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"client": 0}\n')
    assert main([str(ok)]) == 0
    assert main([str(ok), str(bad)]) == 1
    assert main([str(bad), str(broken)]) == 2
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    out = capsys.readouterr().out
    assert f"{ok}: linearizable" in out and f"{bad}: NOT linearizable" in out
    assert "line 1, field 'op': missing" in out


def test_cli_as_module() -> None:
    run = subprocess.run([sys.executable, "-m", "raftfast.testing.linearizability",
                          str(DATA / "c10-ok.jsonl"), str(DATA / "c10-bad.jsonl")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "c10-ok.jsonl: linearizable" in run.stdout
    assert "c10-bad.jsonl: NOT linearizable" in run.stdout
