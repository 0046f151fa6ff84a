"""One LISTEN connection per process, outside the pool, waking this process's event readers.

A notification only wakes readers; the table is the truth. So the listener also asks, every
poll interval, for the last sequence of each activity someone here watches, and wakes the
readers of those that moved: a notification lost (the connection dropped, a reconnect) delays
an event by at most that interval. The same query doubles as the connection's liveness check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg

from participation_grpc import outbox

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5.0
ANY_ACTIVITY = None  # subscribe(ANY_ACTIVITY): woken for every activity (the relay)


class EventListener:
    def __init__(self, dsn: str, poll_seconds: float = 1.0) -> None:
        self._dsn = dsn
        self._poll_seconds = poll_seconds
        self._readers: dict[uuid.UUID | None, set[asyncio.Event]] = {}
        self._heads: dict[uuid.UUID, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscribe(self, activity_id: uuid.UUID | None) -> Iterator[asyncio.Event]:
        """An event set whenever activity_id (or any, for ANY_ACTIVITY) may have new events.
        Clear it before reading, so that a change during the read wakes the reader again."""
        wake = asyncio.Event()
        self._readers.setdefault(activity_id, set()).add(wake)
        try:
            yield wake
        finally:
            readers = self._readers[activity_id]
            readers.discard(wake)
            if not readers:
                del self._readers[activity_id]
                if activity_id is not None:
                    self._heads.pop(activity_id, None)

    async def _run(self) -> None:
        down_logged = False
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=CONNECT_TIMEOUT_SECONDS,
                    server_settings={"application_name": "participation-grpc listener"})
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                if not down_logged:
                    log.warning("event listener cannot connect (%s); polling resumes on return", exc)
                    down_logged = True
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            down_logged = False
            try:
                await self._listen(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("event listener lost its connection (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                conn.terminate()

    async def _listen(self, conn: asyncpg.Connection) -> None:
        await conn.add_listener(outbox.CHANNEL, self._notified)
        self.connected.set()
        self._wake_all()  # whatever committed while nobody here was listening
        while not conn.is_closed():
            await self._poll(conn)
            await asyncio.sleep(self._poll_seconds)
        raise ConnectionResetError("the listener's connection closed")

    async def _poll(self, conn: asyncpg.Connection) -> None:
        watched = [a for a in self._readers if a is not None]
        heads = await outbox.heads(_Timed(conn, self._poll_seconds * 5), watched)
        for activity_id, head in heads.items():
            if self._heads.get(activity_id) != head:
                self._heads[activity_id] = head
                self._wake(activity_id)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            activity_id = uuid.UUID(str(payload))
        except ValueError:
            return
        self._wake(activity_id)

    def _wake(self, activity_id: uuid.UUID) -> None:
        for key in (activity_id, ANY_ACTIVITY):
            for wake in self._readers.get(key, ()):
                wake.set()

    def _wake_all(self) -> None:
        for readers in self._readers.values():
            for wake in readers:
                wake.set()


class _Timed:
    """The listener's connection with a timeout on each query: a connection that stopped
    answering is replaced instead of waited on."""

    def __init__(self, conn: asyncpg.Connection, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._conn.fetchrow(query, *args, timeout=self._timeout)
