"""The connection pool: one round trip per call, contention retried, readiness for health."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg

from participation_grpc.errors import RETRYABLE_SQLSTATES

log = logging.getLogger(__name__)
_RACE_ATTEMPTS = 5
_PING_SECONDS = 2.0  # a health check must answer even when the database hangs


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Calls set no session state, so a released connection needs no reset round trip."""


async def _learn_types(connection: asyncpg.Connection) -> None:
    """Type work done once per connection rather than inside somebody's call: jsonb (lists,
    keyset positions, bulk results) travels as Python objects, and uuid[], which asyncpg would
    otherwise look up with two queries on first use, is known from the start."""
    await connection.set_type_codec("jsonb", schema="pg_catalog", encoder=json.dumps,
                                    decoder=json.loads)
    await connection.prepare("SELECT $1::uuid[]")


class Database:
    """A pool of connections that run one stored procedure per call."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, min_size: int = 2, max_size: int = 20) -> Database:
        options: dict[str, Any] = {
            "max_size": max_size, "reset": _keep_session, "init": _learn_types,
            # Plans of small procedure calls never pay back JIT compilation.
            "server_settings": {"application_name": "participation-grpc", "jit": "off"},
        }
        try:
            return cls(await asyncpg.create_pool(dsn, min_size=min_size, **options))
        except (OSError, asyncpg.PostgresError) as exc:
            # Start anyway: health says NOT_SERVING until the database answers.
            log.warning("database unreachable at start-up (%s); connecting on demand", exc)
            return cls(await asyncpg.create_pool(dsn, min_size=0, **options))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record:
        """One statement on a pooled connection (its prepared statement cached per connection).

        A serialization failure or deadlock means the call lost a race and changed nothing, so
        it is run again rather than shown to the caller.
        """
        for attempt in range(1, _RACE_ATTEMPTS + 1):
            try:
                row = await self._pool.fetchrow(query, *args)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate not in RETRYABLE_SQLSTATES or attempt == _RACE_ATTEMPTS:
                    raise
                log.info("retrying after %s (attempt %d)", exc.sqlstate, attempt)
                continue
            if row is None:  # every procedure returns one row: none is a bug, answered INTERNAL
                raise LookupError(f"no row from {query.split('(')[0]}")
            return row
        raise AssertionError("unreachable")

    async def is_reachable(self) -> bool:
        try:
            await self._pool.fetchval("SELECT 1", timeout=_PING_SECONDS)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    async def close(self) -> None:
        await self._pool.close()
