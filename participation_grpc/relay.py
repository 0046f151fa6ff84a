"""The relay: every outbox event appended to a Redis stream, by one replica at a time.

The replica holding a PostgreSQL advisory lock relays; the others try for it every few seconds,
so one takes over soon after the holder's connection goes (a killed process drops it at once;
TCP keepalives end a vanished host's within seconds). The relayer does all its database work on
the connection that holds the lock, so it cannot move the cursor after losing it.

Each batch is one REPEATABLE READ transaction: read the batch (sql/procedures/50_event_streams.sql
says how the cursor survives transactions that commit out of id order), XADD it in one
MULTI/EXEC, move the cursor, commit. Redis failing rolls the batch back: the events wait in the
outbox. Dying between XADD and commit sends the batch again: at least once, consumers
de-duplicate by event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from participation_grpc import metrics

log = logging.getLogger(__name__)
LOCK_KEY = 7061727469636921
BATCH_SIZE = 500
# The server notices a relayer whose host vanished (no FIN, no RST) and frees the lock.
_KEEPALIVE = {"tcp_keepalives_idle": "2", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "3"}
_RELAYED = metrics.EVENTS_RELAYED
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class Relay:
    def __init__(
        self,
        dsn: str,
        redis_url: str,
        stream: str,
        election_seconds: float = 2.0,
        poll_seconds: float = 1.0,
        redis_timeout_seconds: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._stream = stream
        self._election_seconds = election_seconds
        self._poll_seconds = poll_seconds
        self._redis = Redis.from_url(
            redis_url,
            socket_timeout=redis_timeout_seconds,
            socket_connect_timeout=redis_timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )
        self._task: asyncio.Task[None] | None = None
        self._redis_down = False
        self.leading = asyncio.Event()
        self._lag_seconds: float | None = None

    @property
    def lag_seconds(self) -> float | None:
        """Seconds the oldest committed event not yet in Redis has waited, as of the last batch
        (0 when caught up); None while this process is not the relayer."""
        return self._lag_seconds

    @lag_seconds.setter
    def lag_seconds(self, seconds: float | None) -> None:
        self._lag_seconds = seconds
        metrics.relay_lag(seconds or 0.0)  # 0 when not relaying: the max over processes holds

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            conn = await self._elect()
            failed = False
            try:
                await self._lead(conn)
            except _DB_ERRORS as exc:
                log.warning("relay lost its database connection (%s); standing for election", exc)
            except Exception:  # never die: give the lock up (another replica may do better)
                log.exception("relay failed; standing for election again")
                failed = True
            finally:
                self.leading.clear()
                self.lag_seconds = None
                conn.terminate()
            if failed:
                await asyncio.sleep(self._election_seconds)

    async def _elect(self) -> asyncpg.Connection:
        """A connection holding the relay's lock, once this process wins it."""
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=5,
                    server_settings={"application_name": "participation-grpc relay", **_KEEPALIVE},
                )
            except _DB_ERRORS:
                await asyncio.sleep(self._election_seconds)
                continue
            try:
                won = await self._win(conn)
            except _DB_ERRORS:
                won = False
            if won:
                log.info("relaying events to the Redis stream %r", self._stream)
                self.leading.set()
                return conn
            conn.terminate()

    async def _win(self, conn: asyncpg.Connection) -> bool:
        """Asks for the lock until it is free; False when the connection must be replaced."""
        while not conn.is_closed():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                return True
            await asyncio.sleep(self._election_seconds)
        return False

    async def _lead(self, conn: asyncpg.Connection) -> None:
        """Batch after batch; after one that was not full, the next poll. (No notifications:
        writers send them only for activities someone watches.)"""
        while True:
            try:
                full = await self.relay_batch(conn)
            except RedisError as exc:
                if not self._redis_down:
                    log.warning("Redis unreachable (%s); events wait in the outbox", exc)
                    self._redis_down = True
                await asyncio.sleep(self._poll_seconds)
                continue
            if self._redis_down:
                log.info("Redis answers again; relaying the events that waited")
                self._redis_down = False
            if not full:
                await asyncio.sleep(self._poll_seconds)

    async def relay_batch(self, conn: asyncpg.Connection) -> bool:
        """Relays one batch; True when it was full (more may be waiting)."""
        async with conn.transaction(isolation="repeatable_read"):
            rows = await conn.fetch("SELECT * FROM activity.pa_relay_batch($1)", BATCH_SIZE)
            self.lag_seconds = max((r["age_seconds"] for r in rows), default=0.0)
            if rows:
                await self._append(rows)
            await conn.execute(
                "SELECT activity.pa_relay_advance($1)", max((r["event_id"] for r in rows), default=0)
            )
        _RELAYED.inc(len(rows))
        full = len(rows) >= BATCH_SIZE
        if not full:
            self.lag_seconds = 0.0
        return full

    async def _append(self, rows: Sequence[asyncpg.Record]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for row in rows:
                pipe.xadd(
                    self._stream,
                    {
                        "event_id": row["event_id"],
                        "activity_id": str(row["activity_id"]),
                        "sequence": row["sequence"],
                        "event_type": row["event_type"],
                        "user_id": str(row["user_id"]),
                        "actor_user_id": str(row["actor_user_id"] or ""),
                        "occurred_at": row["occurred_at"].astimezone(UTC).isoformat(),
                        "payload": row["payload"],  # jsonb as its JSON text: no codec here
                    },
                )
            await pipe.execute()
