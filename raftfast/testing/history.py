"""The key-value history format: one JSON object per line, read and written by every tool.

    {"client": 3, "op": "put", "key": "k", "value": "v", "output": null,
     "call": 1200, "return": 1900, "status": "ok"}

`call` is taken before the request is sent and `return` after the reply (or the give-up), from
one monotonic clock in nanoseconds. `status` is "ok", "fail" (the server proved the op was not
applied) or "unknown" (timeout, lost connection: it may or may not have taken effect); absent
means "ok". `value` is the new value of put, append and cas; `expected` is cas only; `output` is
a get's result (null = absent) or a cas's "ok"/"fail".
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from ..errors import RaftError

OpName = Literal["get", "put", "append", "delete", "cas"]
Status = Literal["ok", "fail", "unknown"]

OPS: frozenset[str] = frozenset(("get", "put", "append", "delete", "cas"))
STATUSES: frozenset[str] = frozenset(("ok", "fail", "unknown"))
_WITH_VALUE = frozenset(("put", "append", "cas"))


class HistoryError(RaftError, ValueError):
    """A history line that is not valid; names the 1-based line number and the field."""

    def __init__(self, line: int, field: str | None, reason: str) -> None:
        where = f"line {line}" if field is None else f"line {line}, field {field!r}"
        super().__init__(f"{where}: {reason}")
        self.line = line
        self.field = field
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.line, self.field, self.reason))


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One client operation as recorded. `ret` is the JSON field "return" (a Python keyword)."""

    client: int
    op: OpName
    key: str
    call: int
    ret: int
    value: str | None = None
    expected: str | None = None
    output: str | None = None
    status: Status = "ok"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"client": self.client, "op": self.op, "key": self.key}
        if self.op in _WITH_VALUE:
            d["value"] = self.value
        if self.op == "cas":
            d["expected"] = self.expected
        d["output"] = self.output
        d["call"] = self.call
        d["return"] = self.ret
        d["status"] = self.status
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def describe(self) -> str:
        """Short human form for verdict explanations, e.g. `client 2 get('k') -> 'v' [10, 20]`."""
        if self.op == "get":
            result = "absent" if self.output is None else repr(self.output)
            body = f"get({self.key!r}) -> {result}"
        elif self.op == "delete":
            body = f"delete({self.key!r})"
        elif self.op == "cas":
            result = "" if self.output is None else f" -> {self.output}"
            body = f"cas({self.key!r}, {self.expected!r} -> {self.value!r}){result}"
        else:
            body = f"{self.op}({self.key!r}, {self.value!r})"
        status = "" if self.status == "ok" else f" ({self.status})"
        return f"client {self.client} {body} [call {self.call}, return {self.ret}]{status}"


def _is_int(x: object) -> bool:
    # bool is an int subclass; true/false in a time or client field is a recorder bug.
    return isinstance(x, int) and not isinstance(x, bool)


def parse_operation(obj: object, line: int) -> Operation:
    """Validate one decoded JSON object; `line` is only for error messages."""
    if not isinstance(obj, dict):
        raise HistoryError(line, None, f"expected a JSON object, got {type(obj).__name__}")

    def required(field: str) -> Any:
        if field not in obj:
            raise HistoryError(line, field, "missing")
        return obj[field]

    def bad_type(field: str, want: str) -> HistoryError:
        return HistoryError(line, field, f"expected {want}, got {obj[field]!r}")

    client = required("client")
    if not _is_int(client):
        raise bad_type("client", "an integer")
    op = required("op")
    if op not in OPS:
        raise HistoryError(line, "op", f"unknown op {op!r} (expected one of {sorted(OPS)})")
    key = required("key")
    if not isinstance(key, str):
        raise bad_type("key", "a string")
    call, ret = required("call"), required("return")
    if not _is_int(call):
        raise bad_type("call", "an integer (ns)")
    if not _is_int(ret):
        raise bad_type("return", "an integer (ns)")
    if call > ret:
        raise HistoryError(line, "return", f"return {ret} is before call {call}")
    status = obj.get("status", "ok")
    if status not in STATUSES:
        raise HistoryError(line, "status", f"expected one of {sorted(STATUSES)}, got {status!r}")

    value = expected = None
    if op in _WITH_VALUE:
        value = required("value")
        if not isinstance(value, str):
            raise bad_type("value", "a string")
    if op == "cas":
        expected = required("expected")
        if not isinstance(expected, str):
            raise bad_type("expected", "a string")

    output = obj.get("output")
    if output is not None and not isinstance(output, str):
        raise bad_type("output", "a string or null")
    if op == "get" and status == "ok" and "output" not in obj:
        # null means "absent", so a missing output cannot be given a default.
        raise HistoryError(line, "output", "missing (a get with status ok needs its result)")
    if op == "cas" and output not in (None, "ok", "fail"):
        raise bad_type("output", '"ok", "fail" or null')
    if op in ("put", "append", "delete"):
        output = None  # writes have no result; golden files omit it or write null.

    return Operation(client=client, op=op, key=key, call=call, ret=ret, value=value,
                     expected=expected, output=output, status=status)


def load_history(source: str | os.PathLike[str] | Iterable[str]) -> list[Operation]:
    """Read a history from a file path or from an iterable of JSON lines; blank lines are skipped.

    Raises HistoryError (a ValueError) naming the line and field of the first malformed line.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8") as f:
            return _parse_lines(f)
    return _parse_lines(source)


def _parse_lines(lines: Iterable[str]) -> list[Operation]:
    ops: list[Operation] = []
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise HistoryError(n, None, f"invalid JSON: {e.msg} at column {e.colno}") from None
        ops.append(parse_operation(obj, n))
    return ops


class PendingOp:
    """An operation whose call time is stamped; finish it once with ok(), fail() or unknown()."""

    __slots__ = ("_writer", "_fields", "_done")

    def __init__(self, writer: HistoryWriter, fields: dict[str, Any]) -> None:
        self._writer = writer
        self._fields = fields
        self._done = False

    def ok(self, output: str | None = None) -> Operation:
        return self._finish("ok", output)

    def fail(self) -> Operation:
        """Only when the server proved the op was not applied; a timeout is unknown()."""
        return self._finish("fail", None)

    def unknown(self) -> Operation:
        return self._finish("unknown", None)

    def _finish(self, status: Status, output: str | None) -> Operation:
        if self._done:
            raise RuntimeError("operation already finished")
        self._done = True
        op = Operation(**self._fields, ret=self._writer.clock(), output=output, status=status)
        self._writer.write(op)
        return op


class HistoryWriter:
    """Appends operations to a history file, one JSON line each, flushed line by line so a
    recorder that dies keeps every operation it finished."""

    def __init__(self, path: str | os.PathLike[str],
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self._file: TextIO = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()  # clients may be threads; keep lines whole.

    def invoke(self, client: int, op: OpName, key: str, value: str | None = None,
               expected: str | None = None) -> PendingOp:
        """Stamp the call time now, just before the request is sent."""
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        if (op in _WITH_VALUE) != (value is not None) or (op == "cas") != (expected is not None):
            raise ValueError(f"{op}: value is for put/append/cas, expected for cas only")
        fields = {"client": client, "op": op, "key": key, "value": value,
                  "expected": expected, "call": self.clock()}
        return PendingOp(self, fields)

    def write(self, op: Operation) -> None:
        line = op.to_json() + "\n"
        with self._lock:
            self._file.write(line)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
