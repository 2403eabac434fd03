"""Rate-limited logging, for conditions that can repeat thousands of times a second (a full
send queue, a peer that keeps refusing connections)."""

from __future__ import annotations

import logging
import time
from typing import Dict, Hashable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs at most once per `interval` seconds per key, and says how many were suppressed."""

    __slots__ = ("_logger", "_interval", "_last", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = 5.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: Dict[Hashable, float] = {}
        self._suppressed: Dict[Hashable, int] = {}

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args += (suppressed,)
        self._logger.log(level, msg, *args)
