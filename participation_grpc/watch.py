"""WatchActivity streams of this process: replay then live, re-checked authority, the per-user
limit. No gRPC here: a stream is an async iterator of ActivityEvent fields. (Shutdown ends
streams in the pipeline: it cancels the one waiting here, and finally blocks clean up.)"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

from participation_grpc import errors, outbox
from participation_grpc.db import Database
from participation_grpc.listener import EventListener

MAX_STREAMS_PER_USER = 5  # contract 9, per replica
PAGE_SIZE = 100
# A stream re-reads (and so re-checks the caller's authority) at least this often, so one that
# lost it ends within 5 s (contract 9) even on an activity where nothing happens.
RECHECK_SECONDS = 4.0


class Watchers:
    """Opens streams for the servicer and counts them per user."""

    def __init__(
        self, db: Database, listener: EventListener, recheck_seconds: float = RECHECK_SECONDS
    ) -> None:
        self._db = db
        self._listener = listener
        self._recheck_seconds = recheck_seconds
        self._open: Counter[uuid.UUID] = Counter()

    @property
    def open_streams(self) -> int:
        """Streams open in this process now (for the metrics)."""
        return sum(self._open.values())

    async def stream(
        self, activity_id: uuid.UUID, user_id: uuid.UUID, after_sequence: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of the activity after `after_sequence` (None: from now on), then live
        ones, until the caller goes away, loses the right to watch, or the server stops."""
        with self._slot(user_id), self._listener.subscribe(activity_id) as wake:
            # Subscribed and leased first: a change committed while the stream opens wakes it.
            await outbox.lease(self._db, activity_id, self._listener.id, self._listener.lease_seconds)
            cursor = await outbox.open_watch(self._db, activity_id, user_id, after_sequence)
            while True:
                wake.clear()
                page = await outbox.read_events(self._db, activity_id, user_id, cursor, PAGE_SIZE)
                for event in page.events:
                    yield event
                cursor = page.last_sequence
                if not page.full:
                    # Until woken, or time to re-check authority.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self._recheck_seconds)

    @contextlib.contextmanager
    def _slot(self, user_id: uuid.UUID) -> Iterator[None]:
        if self._open[user_id] >= MAX_STREAMS_PER_USER:
            raise errors.too_many_streams(MAX_STREAMS_PER_USER, str(user_id))
        self._open[user_id] += 1
        try:
            yield
        finally:
            self._open[user_id] -= 1
            if not self._open[user_id]:
                del self._open[user_id]
