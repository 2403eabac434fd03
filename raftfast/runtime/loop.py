"""Event-loop selection: uvloop when it is importable, the stdlib loop otherwise."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

try:  # uvloop is a declared dependency, but not available on every platform (Windows)
    import uvloop
except ImportError:  # pragma: no cover - exercised only where uvloop is missing
    uvloop = None  # type: ignore[assignment]

__all__ = ["LOOP_NAME", "new_event_loop", "run"]

T = TypeVar("T")

LOOP_NAME = "uvloop" if uvloop is not None else "asyncio"
"""Which loop `new_event_loop` and `run` use."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    if uvloop is not None:
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the fastest loop available."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
