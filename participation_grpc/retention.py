"""Rows past their time are deleted now and then, a small batch per transaction: events after
EVENT_RETENTION_DAYS (Retention), replies of idempotent writes after 24 h (replays.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from participation_grpc import outbox
from participation_grpc.db import Database

log = logging.getLogger(__name__)
BATCH_SIZE = 1000
INTERVAL_SECONDS = 300.0
# Between batches, so a long backlog never holds row locks or the disk for long at a stretch.
PAUSE_SECONDS = 0.05
# Deletes up to n expired rows in one transaction; returns how many it deleted.
Batch = Callable[[int], Awaitable[int]]


class Pruner:
    """Every replica prunes now and then: `batch` after `batch` until one comes back short."""

    def __init__(self, what: str, batch: Batch, interval_seconds: float = INTERVAL_SECONDS) -> None:
        self._what = what
        self._batch = batch
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def prune(self) -> int:
        """Deletes every expired row, batch by batch; returns how many."""
        total = 0
        while True:
            deleted = await self._batch(BATCH_SIZE)
            total += deleted
            if deleted < BATCH_SIZE:
                return total
            await asyncio.sleep(PAUSE_SECONDS)

    async def _run(self) -> None:
        while True:
            try:
                deleted = await self.prune()
            except Exception:  # a failed run is tried again at the next interval
                log.warning("pruning expired %s failed", self._what, exc_info=True)
            else:
                if deleted:
                    log.info("deleted %d expired %s", deleted, self._what)
            await asyncio.sleep(self._interval)


class Retention(Pruner):
    """Events older than EVENT_RETENTION_DAYS; the SQL lets one replica at a time do the work.
    With a relay, only events it has passed are deleted, so events waiting for Redis are never
    lost."""

    def __init__(
        self, db: Database, days: int, relayed_only: bool, interval_seconds: float = INTERVAL_SECONDS
    ) -> None:
        super().__init__("events", self._events, interval_seconds)
        self._db = db
        self._retention = timedelta(days=days)
        self._relayed_only = relayed_only

    async def _events(self, limit: int) -> int:
        before = datetime.now(UTC) - self._retention
        return await outbox.prune(self._db, before, limit, self._relayed_only)
