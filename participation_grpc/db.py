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

from participation_grpc import errors, metrics
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
        return cls(
            settings.db_lock_timeout_ms,
            settings.db_statement_timeout_ms,
            settings.db_acquire_timeout_ms,
            max(1, settings.db_pool_max_size // 4),
        )


async def _learn_types(connection: asyncpg.Connection) -> None:
    """Type work done once per connection rather than inside somebody's call: json and jsonb
    (list items, keyset positions, bulk results) travel as Python objects, and uuid[], which
    asyncpg would otherwise look up with two queries on first use, is known from the start."""
    for kind in ("json", "jsonb"):
        await connection.set_type_codec(kind, schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
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
    """Connections that run one stored procedure per call.

    Not asyncpg's Pool: its acquire and release (a task per release, holders, a reset hook)
    cost 120 us of CPU per call against 70 us for the statement itself. Calls here set no
    session state, so a connection goes back as it came; the gates bound how many calls hold
    one (in total, and per activity), so taking a connection never waits.
    """

    def __init__(self, connections: _Connections, limits: Limits) -> None:
        self._connections = connections
        self._acquire_seconds = limits.acquire_timeout_ms / 1000
        self._answer_seconds = limits.statement_timeout_ms / 1000 + _ANSWER_SLACK_SECONDS
        self._race_seconds = limits.lock_timeout_ms / 1000
        self._per_key = _Gate(limits.per_key)
        self._slots = _Gate(connections.max_size)
        self._statements = metrics.Statements()

    @classmethod
    async def connect(
        cls,
        dsn: str,
        min_size: int = 2,
        max_size: int = 20,
        limits: Limits | None = None,
        query_logger: QueryLogger | None = None,
    ) -> Database:
        limits = limits or Limits()
        connections = _Connections(dsn, max_size, limits, query_logger)
        try:
            await connections.open(min_size)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Start anyway: health says NOT_SERVING until the database answers.
            log.warning("database unreachable at start-up (%s); connecting on demand", exc)
        return cls(connections, limits)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record:
        """One statement on a connection of its own (its prepared statement cached there).

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
                if (
                    exc.sqlstate not in errors.RETRYABLE_SQLSTATES
                    or attempt == _RACE_ATTEMPTS
                    or time.monotonic() - started > self._race_seconds
                ):
                    raise
                log.debug("retrying after %s (attempt %d)", exc.sqlstate, attempt)
                continue
            if row is None:
                log.error("%s returned no row", query)
                raise errors.internal()
            return row
        raise AssertionError("unreachable")

    async def _once(self, query: str, args: tuple[Any, ...]) -> asyncpg.Record | None:
        key = args[0] if args else None
        deadline = time.monotonic() + self._acquire_seconds
        await self._per_key.enter(key, self._acquire_seconds)
        try:
            waiting = time.monotonic()
            await self._slots.enter(None, max(0.001, deadline - waiting))
            try:
                return await self._on_a_connection(query, args, waiting)
            finally:
                self._slots.leave(None)
        finally:
            self._per_key.leave(key)

    async def _on_a_connection(
        self, query: str, args: tuple[Any, ...], waiting: float
    ) -> asyncpg.Record | None:
        connection = await self._connections.take()
        running = time.monotonic()
        metrics.POOL_ACQUIRE_SECONDS.observe(running - waiting)
        try:
            row = await connection.fetchrow(query, *args, timeout=self._answer_seconds)
        except asyncpg.PostgresError as exc:
            self._statements.ran(query, time.monotonic() - running, exc)
            self._connections.give_back(connection)  # a refused call leaves it as it was
            raise
        except TimeoutError as exc:
            self._statements.ran(query, time.monotonic() - running, exc)
            # The server does not even enforce its own statement_timeout: it is frozen or cut
            # off. Whether the statement committed is unknown; the connection is not reused.
            self._connections.retire(connection)
            raise errors.database_unavailable("no answer from the database") from None
        except _BROKEN as exc:
            self._statements.ran(query, time.monotonic() - running, exc)
            self._connections.drop_broken(connection)
            raise
        except BaseException as exc:
            self._statements.ran(query, time.monotonic() - running, exc)
            # Cancelled (the caller's deadline, the drain): the statement may still run, so the
            # connection is not reused, and it is closed only after PostgreSQL was asked to
            # cancel the statement (terminating it at once would leave it waiting on its lock).
            self._connections.retire(connection)
            raise
        self._statements.ran(query, time.monotonic() - running)
        self._connections.give_back(connection)
        return row

    def pool_sizes(self) -> tuple[int, int, int]:
        """(open connections, idle ones, the most there may be), for the metrics."""
        idle = self._connections.idle
        return idle + self._slots.held(None), idle, self._connections.max_size

    async def close(self) -> None:
        await self._connections.close(self._answer_seconds)


class _Connections:
    """Open connections, idle ones reused last-in first-out. Never more than `max_size` are
    taken at once (Database's gate sees to it), so `take` connects or reuses, never waits."""

    def __init__(self, dsn: str, max_size: int, limits: Limits, query_logger: QueryLogger | None) -> None:
        self._dsn = dsn
        self.max_size = max_size
        self._idle: list[asyncpg.Connection] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._query_logger = query_logger
        self._server_settings = session_settings(limits)
        self._connect_seconds = limits.acquire_timeout_ms / 1000  # part of acquiring

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def open(self, count: int) -> None:
        opened = await asyncio.gather(*(self._connect() for _ in range(count)))
        self._idle.extend(opened)

    async def take(self) -> asyncpg.Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection
        try:
            return await self._connect()
        except TimeoutError:
            raise errors.database_unavailable("connecting timed out") from None

    def give_back(self, connection: asyncpg.Connection) -> None:
        if not connection.is_closed():
            self._idle.append(connection)
            return
        # The server closed it (a restart, a failover, an administrator): the idle ones are
        # most likely gone too, and each would fail one more call before that shows.
        self._drop_idle()

    def drop_broken(self, connection: asyncpg.Connection) -> None:
        """The connection broke: so, most likely, did the idle ones (a restart)."""
        connection.terminate()
        self._drop_idle()

    def retire(self, connection: asyncpg.Connection) -> None:
        """Closes a connection whose statement may still run: asyncpg's graceful close sends
        PostgreSQL a cancel request and waits for it (bounded), then says goodbye."""
        task = asyncio.get_running_loop().create_task(self._close(connection))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close(self, connection: asyncpg.Connection) -> None:
        try:
            await asyncio.wait_for(connection.close(), self._connect_seconds)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            connection.terminate()

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.terminate()

    async def _connect(self) -> asyncpg.Connection:
        # One bound for the connect and the type work together: the server may stop answering
        # in between (frozen, cut off), and the type work's queries have no timeout of their
        # own; unbounded, such a call would hold its gate places until the server came back.
        async with asyncio.timeout(self._connect_seconds):
            connection: asyncpg.Connection = await asyncpg.connect(
                self._dsn, server_settings=self._server_settings
            )
            try:
                await _learn_types(connection)
            except BaseException:
                connection.terminate()
                raise
        if self._query_logger is not None:
            connection.add_query_logger(self._query_logger)
        return connection

    async def close(self, within: float) -> None:
        if self._retiring:
            await asyncio.wait(self._retiring, timeout=within)
        idle, self._idle = self._idle, []
        for connection in idle:
            try:
                await asyncio.wait_for(connection.close(), within)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                connection.terminate()


# Errors that say the connection itself broke (not the statement).
_BROKEN = (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)


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

    def held(self, key: Hashable) -> int:
        return self._held.get(key, 0)

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
