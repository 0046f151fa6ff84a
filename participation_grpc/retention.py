"""EVENT_RETENTION_DAYS: events older than that are deleted, a small batch per transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from participation_grpc import outbox
from participation_grpc.db import Database

log = logging.getLogger(__name__)
BATCH_SIZE = 1000
INTERVAL_SECONDS = 300.0
# Between batches, so a long backlog never holds row locks or the disk for long at a stretch.
PAUSE_SECONDS = 0.05


class Retention:
    """Every replica prunes now and then; the SQL lets one at a time do the work. With a relay,
    only events it has passed are deleted, so events waiting for Redis are never lost."""

    def __init__(self, db: Database, days: int, relayed_only: bool,
                 interval_seconds: float = INTERVAL_SECONDS) -> None:
        self._db = db
        self._retention = timedelta(days=days)
        self._relayed_only = relayed_only
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
        """Deletes every expired event, batch by batch; returns how many."""
        before = datetime.now(UTC) - self._retention
        total = 0
        while True:
            deleted = await outbox.prune(self._db, before, BATCH_SIZE, self._relayed_only)
            total += deleted
            if deleted < BATCH_SIZE:
                return total
            await asyncio.sleep(PAUSE_SECONDS)

    async def _run(self) -> None:
        while True:
            try:
                deleted = await self.prune()
            except Exception:  # a failed run is tried again at the next interval
                log.warning("pruning expired events failed", exc_info=True)
            else:
                if deleted:
                    log.info("deleted %d events older than %s", deleted, self._retention)
            await asyncio.sleep(self._interval)
