"""Log lines a client can provoke at will, at most one per kind per interval, so a client cannot flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class _Window:
    opened_at: float
    suppressed: int = 0


class RateLimitedLog:
    """At most one record per `kind` every `interval_s`; the records in between are counted, not written.

    The next record written for a kind carries `suppressed` (how many of that kind were dropped since the
    previous one), so counts are never lost, only batched. `kind` must come from a bounded set (an RPC
    method name, an error category), never from request data: one window is kept per kind.

    One instance per server (no process-wide state); not thread-safe, which the single event loop of a
    gateway process does not need.
    """

    def __init__(
        self, logger: logging.Logger, *, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def warning(self, kind: str, message: str, *, extra: Mapping[str, Any] | None = None) -> bool:
        """Log `message` at WARNING unless `kind` was logged within the interval; True when written."""
        return self._log(logging.WARNING, kind, message, extra, exc_info=None)

    def error(
        self, kind: str, message: str, *, exc_info: BaseException | None = None, extra: Mapping[str, Any] | None = None
    ) -> bool:
        """Log `message` at ERROR (with `exc_info`'s traceback) unless `kind` was logged within the interval."""
        return self._log(logging.ERROR, kind, message, extra, exc_info=exc_info)

    def suppressed(self, kind: str) -> int:
        """Records of `kind` dropped since the last one written."""
        window = self._windows.get(kind)
        return 0 if window is None else window.suppressed

    def _log(
        self, level: int, kind: str, message: str, extra: Mapping[str, Any] | None, exc_info: BaseException | None
    ) -> bool:
        now = self._clock()
        window = self._windows.get(kind)
        if window is not None and now - window.opened_at < self._interval_s:
            window.suppressed += 1
            return False
        suppressed = 0 if window is None else window.suppressed
        self._windows[kind] = _Window(opened_at=now)
        fields = {**(extra or {}), "kind": kind, "suppressed": suppressed}
        if suppressed:
            message = f"{message} ({suppressed} more like it since the previous line were not logged)"
        self._logger.log(level, message, extra=fields, exc_info=exc_info)
        return True
