"""Linearizability checker for key-value histories (the format is in `history`).

The search is Wing & Gong's, made just-in-time by Lowe and memoized as porcupine does: walk the
history's call and return events in time order, linearize any op whose call has happened while
no return has yet been passed, and backtrack when a return is reached whose op could not be
placed. A configuration (set of linearized ops, state) already explored is not explored again.
Keys are independent registers, so each key is checked on its own (P-compositionality).

Outcomes: a `fail` op was proven not applied and an `unknown` read constrains nothing, so both
are dropped. An `unknown` write may take effect at any time after its call, or never: it has no
deadline, so the search only has to linearize the ops with a definite outcome (an unknown write
left over goes last, which is the same as never), and it tries unknown writes only when every
definite candidate has failed. Many unknown writes would make that search exponential, so:
  * an unknown write whose effect would change nothing is not tried;
  * once no remaining op can see an unknown write's value, the states holding it are folded into
    one junk state (`_Junk`), and such writes, like deletes, become interchangeable: one of each
    kind is tried per candidate scan, and the memo counts them instead of naming them;
  * a configuration is skipped when it was already explored with no more unknown writes used.
Each rule only drops orderings that a kept ordering can stand in for; tests compare the
verdicts with an exhaustive search on small random histories.

    python -m raftfast.testing.linearizability FILE...
prints a verdict per file; exit status 0 = all linearizable, 1 = a violation, 2 = bad input,
3 = undecided (--timeout ran out).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .history import HistoryError, HistoryWriter, Operation, PendingOp, load_history

__all__ = ["CheckResult", "HistoryError", "HistoryWriter", "Operation", "PendingOp", "check",
           "load_history", "main"]

# Step kinds: how an op reads and changes a key's state (None = absent).
_GET, _PUT, _APPEND, _DELETE, _CAS_OK, _CAS_FAIL, _CAS_ANY = range(7)
# Unknown-write classes already tried in one scan of candidates (they are interchangeable).
_TRIED_JUNK, _TRIED_DELETE = 1, 2


class _Junk:
    """The state "holds the value of an unknown write that no remaining op can see".

    All such states are alike to every remaining op: no get or successful cas can match them, a
    cas that must fail passes, an append keeps the invisible value, a put or delete replaces it.
    Folding them into one state lets the search treat those unknown writes as interchangeable.
    """

    __slots__ = ()

    def __add__(self, appended: str) -> _Junk:
        return self

    def __repr__(self) -> str:
        return "<junk>"


_JUNK = _Junk()
State = str | None | _Junk


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict. `linearizable` is None when the timeout ran out first.

    keys_checked counts keys whose search finished (all of them when linearizable). For a
    violation: failing_key; culprit, the op that could not be placed at the deepest point the
    search reached; partial, the longest linearizable ordering found before it (unknown writes
    included where they were placed); explanation, one readable sentence.
    """

    linearizable: bool | None
    keys_checked: int
    failing_key: str | None = None
    culprit: Operation | None = None
    partial: tuple[Operation, ...] = ()
    explanation: str = ""


class _Timeout(Exception):
    pass


@dataclass(slots=True)
class _Failure:
    culprit: Operation
    partial: tuple[Operation, ...]
    state: State
    definite: int  # how many definite ops the partial ordering holds


def _kind(op: Operation) -> int:
    if op.op == "get":
        return _GET
    if op.op == "put":
        return _PUT
    if op.op == "append":
        return _APPEND
    if op.op == "delete":
        return _DELETE
    if op.status == "unknown" or op.output is None:
        return _CAS_ANY  # applied or not, the comparison decides what it did
    return _CAS_OK if op.output == "ok" else _CAS_FAIL


def _check_key(ops: Sequence[Operation], deadline: float | None) -> _Failure | None:
    """Search one key's history; None when it is linearizable."""
    known = [o for o in ops if o.status == "ok"]
    unknown = sorted((o for o in ops if o.status == "unknown" and o.op != "get"),
                     key=lambda o: o.call)
    n, m = len(known), len(unknown)
    if n == 0:
        return None
    kind = [_kind(o) for o in known]
    arg_a = [o.output if o.op == "get" else o.value for o in known]
    arg_b = [o.expected for o in known]
    ukind = [_kind(o) for o in unknown]
    uval = [o.value for o in unknown]
    uexp = [o.expected for o in unknown]
    ucall = [o.call for o in unknown]
    # Puts and appends become interchangeable once their value is invisible (see _Junk).
    foldable = [k in (_PUT, _APPEND) for k in ukind]
    used = [False] * m
    # An unknown write's value is visible while an op not yet linearized could see it in the
    # state: a definite get whose result, or a cas whose expected, contains it (an unknown cas
    # counts forever). watchers_left[j] counts those ops; watches[i]: the writes op i could see.
    watchers_left = [0] * m
    watches: list[list[int]] = [[] for _ in range(n)]
    for j, v in enumerate(uval):
        if v is None or any(o.op == "cas" and v in o.expected for o in unknown):  # type: ignore
            watchers_left[j] = 1
        for i, o in enumerate(known):
            seen = o.expected if o.op == "cas" else o.output
            if v is not None and seen is not None and v in seen:
                watchers_left[j] += 1
                watches[i].append(j)
    # Definite ops left that a junk state can help: a cas that must fail, or may have done nothing.
    failish = [k in (_CAS_FAIL, _CAS_ANY) for k in kind]
    fails_left = sum(failish)

    # Events in time order, calls before returns at equal times (touching ops are concurrent),
    # as a doubly linked list: entry 0 is the head, 2n+1 the tail, an op's call entry is lifted
    # out together with its return entry when the op is linearized.
    events = sorted([(o.call, 0, i) for i, o in enumerate(known)]
                    + [(o.ret, 1, i) for i, o in enumerate(known)])
    head, tail = 0, 2 * n + 1
    nxt = list(range(1, 2 * n + 2)) + [tail]
    prv = [0] + list(range(0, 2 * n + 1))
    ev_op = [-1] * (2 * n + 2)
    ev_time = [0] * (2 * n + 2)
    is_call = [False] * (2 * n + 2)
    match = [0] * (2 * n + 2)  # call entry -> its return entry
    call_entry = [0] * n
    for e, (t, is_ret, i) in enumerate(events, 1):
        ev_op[e], ev_time[e] = i, t
        if is_ret:
            match[call_entry[i]] = e
        else:
            is_call[e] = True
            call_entry[i] = e

    # The unknown writes used so far, as the search compares them: deletes, and puts and
    # appends whose value is invisible, are interchangeable once called (every later scan may
    # use any of them), so only how many were used matters; the rest are named in xbits.
    xbits = deletes_used = folded_used = 0
    # (definite set, state) -> the (xbits, deletes_used, folded_used) it was explored with. A
    # configuration is skipped if it was explored with no more unknown writes used of each kind:
    # it differs only in having fewer of them left, so its completions are the explored one's.
    cache: dict[tuple[int, State], list[tuple[int, int, int]]] = {}

    def fresh(kbits: int, state: State, xbits: int, deletes_used: int, folded_used: int) -> bool:
        seen = cache.get((kbits, state))
        if seen is None:
            cache[(kbits, state)] = [(xbits, deletes_used, folded_used)]
            return True
        for x, d, b in seen:
            if x & ~xbits == 0 and d <= deletes_used and b <= folded_used:
                return False
        seen.append((xbits, deletes_used, folded_used))
        return True

    state: State = None
    kbits = depth = flags = 0
    # (call entry, or ~j for unknown write j; state before it; scan bound; scan flags)
    stack: list[tuple[int, State, int, int]] = []
    path: list[int] = []  # linearized ops in order: i for definite, ~j for unknown
    best_depth, best = -1, (0, state, path)  # deepest dead end: (bound entry, state, path)
    steps = 0
    entry = nxt[head]
    resume_j = -1  # >= 0: after backtracking an unknown write, try the unknown writes after it
    bound = 0
    while True:
        if resume_j < 0:
            while is_call[entry]:
                i = ev_op[entry]
                k = kind[i]
                a = arg_a[i]
                if k == _GET:
                    ok, new = state == a, state
                elif k == _PUT:
                    ok, new = True, a
                elif k == _APPEND:
                    ok, new = True, (a if state is None else state + a)
                elif k == _DELETE:
                    ok, new = True, None
                elif k == _CAS_OK:
                    ok, new = state == arg_b[i], a
                elif k == _CAS_FAIL:
                    ok, new = state != arg_b[i], state
                else:
                    ok, new = True, (a if state == arg_b[i] else state)
                if not ok:
                    entry = nxt[entry]
                    continue
                nx, nb = xbits, folded_used  # linearizing i may hide used writes' values
                for w in watches[i]:
                    if watchers_left[w] == 1 and used[w] and foldable[w]:
                        nx, nb = nx ^ (1 << w), nb + 1
                if not fresh(kbits | (1 << i), new, nx, deletes_used, nb):
                    entry = nxt[entry]
                    continue
                stack.append((entry, state, 0, 0))
                path.append(i)
                state, kbits, depth, xbits, folded_used = new, kbits | (1 << i), depth + 1, nx, nb
                for w in watches[i]:
                    watchers_left[w] -= 1
                fails_left -= failish[i]
                r = match[entry]  # lift the call and return entries out
                nxt[prv[entry]] = nxt[entry]
                prv[nxt[entry]] = prv[entry]
                nxt[prv[r]] = nxt[r]
                prv[nxt[r]] = prv[r]
                if nxt[head] == tail:
                    return None
                entry = nxt[head]
                steps += 1
                if deadline is not None and steps & 1023 == 0 and time.monotonic() > deadline:
                    raise _Timeout
            bound, j, flags = entry, 0, 0
        else:
            j, resume_j = resume_j, -1

        # Every definite candidate failed before the return at `bound`: try the unknown writes
        # called by then. One that would change nothing is skipped (leaving it out is as good).
        limit = ev_time[bound]
        while j < m and ucall[j] <= limit:
            if not used[j]:
                k, v, tried = ukind[j], uval[j], 0
                nx, nd, nb = xbits, deletes_used, folded_used
                if k == _DELETE:  # interchangeable: try one per scan
                    new, tried, nd = (state, 0, nd) if flags & _TRIED_DELETE else (
                        None, _TRIED_DELETE, nd + 1)
                elif not watchers_left[j]:
                    # No remaining op can see v: all it can do is make the state junk.
                    if not fails_left:
                        new = state
                    elif k == _CAS_ANY:
                        new, nx = (_JUNK if state == uexp[j] else state), nx | (1 << j)
                    elif flags & _TRIED_JUNK:  # interchangeable: try one per scan
                        new = state
                    else:
                        new, tried, nb = _JUNK, _TRIED_JUNK, nb + 1
                else:
                    if k == _PUT:
                        new = v
                    elif k == _APPEND:
                        new = v if state is None else state + v  # type: ignore[operator]
                    else:
                        new = v if state == uexp[j] else state
                    nx |= 1 << j
                if new is not state and new != state:
                    flags |= tried  # tried now, or found explored: its kind-mates would be too
                    if fresh(kbits, new, nx, nd, nb):
                        stack.append((~j, state, bound, flags))
                        path.append(~j)
                        state, xbits, deletes_used, folded_used = new, nx, nd, nb
                        used[j] = True
                        entry = nxt[head]
                        break
            j += 1
        else:
            # Dead end: remember the deepest one for the explanation, then backtrack.
            if depth > best_depth:
                best_depth, best = depth, (bound, state, path.copy())
            if not stack:
                culprit_entry, fail_state, order = best
                return _Failure(
                    culprit=known[ev_op[culprit_entry]],
                    partial=tuple(known[x] if x >= 0 else unknown[~x] for x in order),
                    state=fail_state, definite=best_depth)
            top, state, bound, flags = stack.pop()
            path.pop()
            if top >= 0:
                r = match[top]  # put the return entry back, then the call entry
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                nxt[prv[top]] = top
                prv[nxt[top]] = top
                i = ev_op[top]
                kbits ^= 1 << i
                depth -= 1
                fails_left += failish[i]
                for w in watches[i]:
                    watchers_left[w] += 1
                    if watchers_left[w] == 1 and used[w] and foldable[w]:
                        xbits, folded_used = xbits | (1 << w), folded_used - 1
                entry = nxt[top]
            else:
                j = ~top
                used[j] = False
                if ukind[j] == _DELETE:
                    deletes_used -= 1
                elif foldable[j] and not watchers_left[j]:
                    folded_used -= 1
                else:
                    xbits ^= 1 << j
                resume_j = j + 1
            steps += 1
            if deadline is not None and steps & 1023 == 0 and time.monotonic() > deadline:
                raise _Timeout


def check(history: Iterable[Operation], timeout: float | None = None) -> CheckResult:
    """Decide whether `history` is linearizable; give up after `timeout` seconds (-> None)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    checked = 0
    # Small keys first: a violation there is found, and explained, sooner.
    for key, ops in sorted(by_key.items(), key=lambda kv: (len(kv[1]), kv[0])):
        if deadline is not None and time.monotonic() > deadline:
            return CheckResult(linearizable=None, keys_checked=checked,
                               explanation=f"timed out after {timeout} s, before key {key!r}")
        try:
            failure = _check_key(ops, deadline)
        except _Timeout:
            return CheckResult(linearizable=None, keys_checked=checked,
                               explanation=f"timed out after {timeout} s on key {key!r}")
        checked += 1
        if failure is not None:
            return CheckResult(linearizable=False, keys_checked=checked, failing_key=key,
                               culprit=failure.culprit, partial=failure.partial,
                               explanation=_explain(key, ops, failure))
    return CheckResult(linearizable=True, keys_checked=checked)


def _explain(key: str, ops: Sequence[Operation], f: _Failure) -> str:
    total = sum(1 for o in ops if o.status == "ok")
    after = f"after {f.partial[-1].describe()}" if f.partial else "initially"
    if f.state is None:
        leaving = "the key absent"
    elif f.state is _JUNK:
        leaving = "a value written by an unknown write that no later op reads"
    else:
        leaving = f"the value {f.state!r}"
    return (f"key {key!r}: {f.culprit.describe()} cannot be linearized; the longest "
            f"linearizable ordering found places {f.definite} of {total} ops with a definite "
            f"outcome and ends {after}, leaving {leaving}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftfast.testing.linearizability",
        description="Check key-value histories (JSON lines) for linearizability.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per file before giving up (exit status 3)")
    args = parser.parse_args(argv)
    worst = 0
    severity = {0: 0, 3: 1, 1: 2, 2: 3}  # bad input outranks a violation outranks undecided
    for path in args.files:
        try:
            history = load_history(path)
        except (OSError, HistoryError) as e:
            print(f"{path}: bad input: {e}")
            code = 2
        else:
            started = time.perf_counter()
            result = check(history, timeout=args.timeout)
            took = time.perf_counter() - started
            if result.linearizable:
                print(f"{path}: linearizable ({len(history)} ops, {result.keys_checked} keys, "
                      f"{took:.2f} s)")
                code = 0
            elif result.linearizable is None:
                print(f"{path}: undecided: {result.explanation}")
                code = 3
            else:
                print(f"{path}: NOT linearizable: {result.explanation}")
                code = 1
        if severity[code] > severity[worst]:
            worst = code
    return worst


if __name__ == "__main__":
    sys.exit(main())
