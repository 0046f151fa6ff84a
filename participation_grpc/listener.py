"""One LISTEN connection per process, outside the pool, waking this process's event readers.

Writers notify only activities some process holds a lease on (a NOTIFY serialises commits
cluster-wide): every poll interval the listener renews the leases of the activities watched
here. A notification only wakes readers; the table is the truth. So the same poll also reads
the last sequence of each watched activity and wakes the readers of those that moved: a lost
notification (a reconnect, a lease not yet seen) delays an event by at most that interval. The
poll doubles as the connection's liveness check.
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
# A lease outlives this many missed polls; an activity nobody watches any more goes on notifying
# for as long, which costs only its writers.
LEASE_POLLS = 10


class EventListener:
    def __init__(self, dsn: str, poll_seconds: float = 1.0) -> None:
        self._dsn = dsn
        self._poll_seconds = poll_seconds
        self.id = uuid.uuid4()  # names this process's leases
        self.lease_seconds = max(poll_seconds * LEASE_POLLS, 5.0)
        self._readers: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._heads: dict[uuid.UUID, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.polls = 0  # polls done, for tests that wait for the next one

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def subscribe(self, activity_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever activity_id may have new events. Clear it before reading, so
        that a change during the read wakes the reader again. The caller takes the first lease
        itself (outbox.lease) when it cannot wait for the next poll."""
        wake = asyncio.Event()
        self._readers.setdefault(activity_id, set()).add(wake)
        try:
            yield wake
        finally:
            readers = self._readers[activity_id]
            readers.discard(wake)
            if not readers:
                del self._readers[activity_id]
                self._heads.pop(activity_id, None)

    async def _run(self) -> None:
        down_logged = False
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=CONNECT_TIMEOUT_SECONDS,
                    server_settings={"application_name": "participation-grpc listener"},
                )
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
            except Exception:  # never die: the streams of this process depend on it
                log.exception("event listener failed; reconnecting")
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                self.connected.clear()
                conn.terminate()

    async def _listen(self, conn: asyncpg.Connection) -> None:
        closed = asyncio.Event()  # set by asyncpg the moment the connection goes
        conn.add_termination_listener(lambda _conn: closed.set())
        # Part of connecting, so bounded alike: LISTEN is a statement without a timeout.
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            await conn.add_listener(outbox.CHANNEL, self._notified)
        self.connected.set()
        self._wake_all()  # whatever committed while nobody here was listening
        while not closed.is_set():
            await self._poll(conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), self._poll_seconds)
        raise ConnectionResetError("the listener's connection closed")

    async def _poll(self, conn: asyncpg.Connection) -> None:
        watched = list(self._readers)
        timed = _Timed(conn, self._poll_seconds * 5)
        await outbox.leases(timed, self.id, watched, self.lease_seconds)
        heads = await outbox.heads(timed, watched)
        self.polls += 1
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
        for wake in self._readers.get(activity_id, ()):
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
