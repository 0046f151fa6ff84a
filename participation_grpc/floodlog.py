"""One log line per flood of one kind of failure, however many calls it fails."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

SUMMARY_SECONDS = 30.0


class FloodLog:
    """Logs the first occurrence of a kind of failure, then at most one summary per
    `summary_seconds` counting what happened meanwhile ("... 5,305 more in 30 s"), so an outage
    or a burst of garbage writes a few lines instead of one per call."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        what: str,
        summary_seconds: float = SUMMARY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._what = what
        self._window = summary_seconds
        self._clock = clock
        self._since: float | None = None  # when the current window began
        self._unlogged = 0

    def record(self, detail: str) -> None:
        now = self._clock()
        if self._since is not None and now - self._since < self._window:
            self._unlogged += 1
            return
        if self._since is None or self._unlogged == 0:
            self._logger.log(self._level, "%s: %s", self._what, detail)
        else:
            self._logger.log(
                self._level,
                "%s: %s (and %d more in the last %.0f s)",
                self._what,
                detail,
                self._unlogged,
                now - self._since,
            )
        self._since = now
        self._unlogged = 0

    def ended(self, message: str) -> None:
        """The flood is over (e.g. the database answers again): say so once, with the count."""
        if self._since is None:
            return
        self._logger.info("%s (%d more since the last line)", message, self._unlogged)
        self._since = None
        self._unlogged = 0
