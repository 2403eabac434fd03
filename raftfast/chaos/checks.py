"""The checks after a chaos run, besides linearizability: no acknowledged write was lost, and
every replica applied the same state.

Both only say what the evidence proves: each finding names the operations behind it, and a
history these functions pass may still fail the linearizability checker, which sees more.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..testing.history import Operation

__all__ = ["divergence", "lost_writes", "tokens"]

_TOKEN = re.compile(r"\[[^\[\]]*\]")


def tokens(value: Optional[str]) -> List[str]:
    """The unique values an append key's value is made of, in order (`[w.n][w.n]...`)."""
    return _TOKEN.findall(value or "")


def lost_writes(history: Sequence[Operation], final: Mapping[str, Optional[str]]) -> List[str]:
    """Problems with the final value of every key in `final` (read after healing), one
    sentence each. Append keys (any append on them) must hold every acknowledged append exactly
    once and nothing that was never appended; a register key's final value must come from a
    write that no acknowledged write strictly followed."""
    by_key: Dict[str, List[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    problems: List[str] = []
    for key, value in sorted(final.items()):
        ops = by_key.get(key, [])
        if any(o.op == "append" for o in ops):
            problems.extend(_append_key(key, ops, value))
        else:
            problems.extend(_register_key(key, ops, value))
    return problems


def _append_key(key: str, ops: List[Operation], value: Optional[str]) -> List[str]:
    found = tokens(value)
    counts = Counter(found)
    appended = {o.value: o for o in ops if o.op == "append" and o.status != "fail"}
    problems = []
    for o in appended.values():
        if o.status == "ok" and counts[o.value] == 0:
            problems.append(f"key {key!r}: acknowledged {o.describe()} is missing from the final value")
    for token, n in counts.items():
        if n > 1:
            problems.append(f"key {key!r}: {token} was applied {n} times")
        if token not in appended:
            problems.append(f"key {key!r}: the final value holds {token}, which no client appended")
    if "".join(found) != (value or ""):
        problems.append(f"key {key!r}: the final value {value!r} is not a sequence of appended values")
    return problems


def _register_key(key: str, ops: List[Operation], value: Optional[str]) -> List[str]:
    # writes that may have taken effect (a cas that answered "fail" changed nothing)
    writes = [o for o in ops if o.op in ("put", "cas", "delete") and o.status != "fail"
              and not (o.op == "cas" and o.status == "ok" and o.output == "fail")]
    acked = [o for o in writes if o.status == "ok"]
    if value is not None:
        sources = [o for o in writes if o.op != "delete" and o.value == value]
        if not sources:
            return [f"key {key!r}: the final value {value!r} was never written"]
        source = sources[0]
        if source.status != "ok":
            return []  # an unknown write may take effect at any time after its call
        later = [o for o in acked if o.call > source.ret]
        if later:
            last = max(later, key=lambda o: o.call)
            return [f"key {key!r}: acknowledged {last.describe()} is lost: the final value "
                    f"{value!r} comes from {source.describe()}, which returned before it was called"]
        return []
    sets = [o for o in acked if o.op != "delete"]
    if not sets:
        return []
    for delete in (o for o in writes if o.op == "delete"):
        # an unknown delete may take effect at any time; an acknowledged one, only before an
        # acknowledged write called after it returned
        if delete.status != "ok" or not any(o.call > delete.ret for o in sets):
            return []
    last = max(sets, key=lambda o: o.call)
    return [f"key {key!r}: acknowledged {last.describe()} is lost: the key is absent at the end "
            f"and no delete could have come after it"]


def divergence(statuses: Mapping[int, Mapping[str, Any]]) -> List[str]:
    """Replicas that committed the same log, once quiet, must hold the same state: one
    sentence per commit index at which their digests differ."""
    by_index: Dict[int, Dict[str, List[int]]] = defaultdict(lambda: defaultdict(list))
    for node, status in sorted(statuses.items()):
        by_index[status["commit_index"]][status["digest"]].append(node)
    problems = []
    for index, digests in sorted(by_index.items()):
        if len(digests) > 1:
            groups = "; ".join(f"nodes {nodes}: {digest[:12]}" for digest, nodes in digests.items())
            problems.append(f"replicas diverge at commit index {index}: {groups}")
    return problems
