"""The connection pool: one round trip per call, bounded waits, races retried."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import asyncpg

from participation_grpc import errors
from participation_grpc.settings import Settings

log = logging.getLogger(__name__)
_RACE_ATTEMPTS = 5
# PostgreSQL enforces DB_STATEMENT_TIMEOUT_MS itself; a statement with no answer this much later
# means the server itself does not answer (frozen, partitioned), and the connection is dropped.
_ANSWER_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """How long a call may wait, and how many pooled connections calls on one id may hold."""

    lock_timeout_ms: int = 2000
    statement_timeout_ms: int = 5000
    acquire_timeout_ms: int = 2000
    per_key: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        # A quarter of the pool per activity: calls queueing on one locked activity can never
        # take the connections that every other activity needs.
        return cls(settings.db_lock_timeout_ms, settings.db_statement_timeout_ms,
                   settings.db_acquire_timeout_ms, max(1, settings.db_pool_max_size // 4))


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Calls set no session state, so a released connection needs no reset round trip."""


async def _learn_types(connection: asyncpg.Connection) -> None:
    """Type work done once per connection rather than inside somebody's call: jsonb (lists,
    keyset positions, bulk results) travels as Python objects, and uuid[], which asyncpg would
    otherwise look up with two queries on first use, is known from the start."""
    await connection.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps,
                                    decoder=json.loads)
    await connection.prepare("SELECT $1::uuid[]")


# Sees every statement the pool's connections run after their setup (tests, tracing).
QueryLogger = Callable[[asyncpg.connection.LoggedQuery], None]


def session_settings(limits: Limits) -> dict[str, str]:
    return {
        "application_name": "participation-grpc",
        # Plans of small procedure calls never pay back JIT compilation.
        "jit": "off",
        "lock_timeout": str(limits.lock_timeout_ms),
        "statement_timeout": str(limits.statement_timeout_ms),
    }


class Database:
    """A pool of connections that run one stored procedure per call."""

    def __init__(self, pool: asyncpg.Pool, limits: Limits) -> None:
        self._pool = pool
        self._limits = limits
        self._acquire_seconds = limits.acquire_timeout_ms / 1000
        self._answer_seconds = limits.statement_timeout_ms / 1000 + _ANSWER_SLACK_SECONDS
        self._race_seconds = limits.lock_timeout_ms / 1000
        self._gate = _Gate(limits.per_key)

    @classmethod
    async def connect(cls, dsn: str, min_size: int = 2, max_size: int = 20,
                      limits: Limits | None = None,
                      query_logger: QueryLogger | None = None) -> Database:
        limits = limits or Limits()

        async def setup(connection: asyncpg.Connection) -> None:
            await _learn_types(connection)
            if query_logger is not None:
                connection.add_query_logger(query_logger)

        options: dict[str, Any] = {
            "max_size": max_size, "reset": _keep_session, "init": setup,
            "server_settings": session_settings(limits),
            "timeout": limits.acquire_timeout_ms / 1000,  # connecting is part of acquiring
        }
        try:
            return cls(await asyncpg.create_pool(dsn, min_size=min_size, **options), limits)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Start anyway: health says NOT_SERVING until the database answers.
            log.warning("database unreachable at start-up (%s); connecting on demand", exc)
            return cls(await asyncpg.create_pool(dsn, min_size=0, **options), limits)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record:
        """One statement on a pooled connection (its prepared statement cached per connection).

        Calls on one id (the procedure's first argument: an activity or invitation) hold at most
        `per_key` connections, so a lock held on one activity slows only that activity. A lost
        race (serialization failure, deadlock, a concurrent insert) changed nothing, so it is run
        again for up to DB_LOCK_TIMEOUT_MS rather than shown to the caller.
        """
        started = time.monotonic()
        for attempt in range(1, _RACE_ATTEMPTS + 1):
            try:
                row = await self._once(query, args)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate not in errors.RETRYABLE_SQLSTATES or attempt == _RACE_ATTEMPTS \
                        or time.monotonic() - started > self._race_seconds:
                    raise
                log.debug("retrying after %s (attempt %d)", exc.sqlstate, attempt)
                continue
            if row is None:
                log.error("%s returned no row", query)
                raise errors.internal()
            return row
        raise AssertionError("unreachable")

    async def _once(self, query: str, args: tuple[Any, ...]) -> asyncpg.Record | None:
        deadline = time.monotonic() + self._acquire_seconds
        await self._gate.enter(args[0] if args else None, self._acquire_seconds)
        try:
            try:
                connection = await self._pool.acquire(
                    timeout=max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                raise errors.database_busy("waiting for a pool connection") from None
            try:
                return await connection.fetchrow(query, *args, timeout=self._answer_seconds)
            except TimeoutError:
                # The server does not even enforce its own statement_timeout: it is frozen or
                # cut off. Whether the statement committed is unknown; the connection is dropped.
                connection.terminate()
                raise errors.database_unavailable("no answer from the database") from None
            finally:
                await self._pool.release(connection, timeout=self._answer_seconds)
        finally:
            self._gate.leave(args[0] if args else None)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), self._answer_seconds)
        except TimeoutError:
            self._pool.terminate()


class _Gate:
    """At most `limit` holders per key; the others queue in arrival order, never holding a pool
    connection while they wait."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}

    async def enter(self, key: Hashable, seconds: float) -> None:
        held = self._held.get(key, 0)
        if held < self._limit and key not in self._waiting:
            self._held[key] = held + 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(waiter)
        try:
            await asyncio.wait_for(waiter, seconds)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.leave(key)  # handed a place it will not use: pass it on
            else:
                waiter.cancel()
                self._drop(key, waiter)
            if isinstance(exc, TimeoutError):
                raise errors.database_busy("queueing behind other calls on the same id") from None
            raise
        # leave() handed its place to this waiter: the count stays as it was.

    def leave(self, key: Hashable) -> None:
        queue = self._waiting.get(key)
        while queue:
            waiter = queue.popleft()
            if not queue:
                del self._waiting[key]
            if not waiter.done():
                waiter.set_result(None)
                return
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]

    def _drop(self, key: Hashable, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[key]
