"""How migrate changes a database that other services keep reading.

A plain SELECT waits only for an ACCESS EXCLUSIVE lock (most ALTER TABLE forms), but it waits
for one that is merely *requested*: a migration queued behind a long reader makes every later
reader queue behind it. So every step here
- waits at most LOCK_TIMEOUT_MS for any lock, and on a timeout rolls back and tries again a
  little later (readers pass in between), for up to `patience` seconds in all;
- holds what it takes only briefly: long work (backfills, index builds) never runs while an
  ACCESS EXCLUSIVE lock is held. Backfills go in batches of their own transactions, indexes are
  built CONCURRENTLY (which blocks neither readers nor writers).

In a dry run the whole run is one transaction that is rolled back: each step becomes a
savepoint and indexes are built inside it, so a dry run holds its locks until it ends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from participation_grpc.migrate.report import MigrationError

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_TIMEOUT_MS = 100
# Sorts and hashes of a whole table (0002's and 0004's window over the waitlist) stay in memory
# instead of spilling to disk, while a step holds its locks.
WORK_MEM = "64MB"
# While a concurrent index build (or drop) waits for older transactions, it says every so often
# whom it waits for; it may wait up to `patience` (10 minutes), and silence looks like a hang.
WAIT_REPORT_SECONDS = 10.0
_RETRY_SQLSTATES = frozenset({"55P03", "40P01"})  # lock_not_available, deadlock_detected
_INDEX = re.compile(
    r"CREATE\s+(UNIQUE\s+)?INDEX\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+ON\s+(\w+)\.(\w+)(.*?);",
    re.IGNORECASE | re.DOTALL,
)


class Steps:
    """Runs migrate's work on one connection (which holds migrate's advisory lock)."""

    def __init__(
        self, conn: asyncpg.Connection, *, dry_run: bool, patience: float, dsn: str | None = None
    ) -> None:
        self.conn = conn
        self.dry_run = dry_run
        self.patience = patience
        self.dsn = dsn  # for a second connection that looks at what a waiting build waits for

    async def transaction(self, what: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`work` in one transaction (a savepoint in a dry run) whose lock waits are short; run
        again from the start when one timed out. Any other failure: MigrationError naming
        `what`, with the transaction rolled back."""
        deadline = time.monotonic() + self.patience
        pause = 0.05
        while True:
            began = time.monotonic()
            try:
                async with self.conn.transaction():
                    await self.conn.execute(
                        f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'; SET LOCAL work_mem = '{WORK_MEM}'"
                    )
                    result = await work(self.conn)
                log.debug("%s: its transaction took %.3f s", what, time.monotonic() - began)
                return result
            except asyncpg.PostgresError as exc:
                if exc.sqlstate not in _RETRY_SQLSTATES:
                    raise MigrationError(f"{what} failed and was rolled back: {_one_line(exc)}") from exc
                if time.monotonic() > deadline:
                    raise MigrationError(
                        f"{what}: could not take its locks within {self.patience:.0f} s, rolled "
                        f"back; {await self._lock_holders()}"
                    ) from exc
                log.info("%s: a lock was busy (%s), trying again", what, exc.sqlstate)
                await asyncio.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 2.0)

    async def execute(self, what: str, sql: str, *args: object) -> str:
        async def work(conn: asyncpg.Connection) -> str:
            return await conn.execute(sql, *args)

        return await self.transaction(what, work)

    async def fetch(self, what: str, sql: str, *args: object) -> list[asyncpg.Record]:
        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(sql, *args)

        return await self.transaction(what, work)

    async def batches(self, what: str, sql: str) -> list[asyncpg.Record]:
        """Run `sql` (one batch, returning the rows it changed) until a batch changes nothing,
        each batch in a transaction of its own. Returns every row changed."""
        done: list[asyncpg.Record] = []
        while rows := await self.fetch(what, sql):
            done += rows
        return done

    async def exists(self, relation: str) -> bool:
        return bool(await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", relation))

    async def build_index(self, create: str, schema: str, name: str) -> None:
        """`create` is `CREATE [UNIQUE] INDEX IF NOT EXISTS ...`: built CONCURRENTLY, outside any
        transaction; an invalid leftover of an interrupted or failed build is dropped and built
        again (by the next run, when this one failed)."""
        if self.dry_run:
            await self.execute(f"index {name}", create)
            return
        valid = await self.conn.fetchval(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)", f"{schema}.{name}"
        )
        if valid:
            return
        concurrent = re.sub(
            r"INDEX\s+IF\s+NOT\s+EXISTS",
            "INDEX CONCURRENTLY IF NOT EXISTS",
            create,
            count=1,
            flags=re.IGNORECASE,
        )
        log.info("building index %s.%s concurrently", schema, name)
        # A concurrent build (or drop) waits for every transaction that holds an older snapshot
        # or a lock on the table, however long it stays open. It blocks nobody meanwhile, so it
        # may wait all of `patience`; then it gives up and says who it waited for.
        await self.conn.execute(f"SET lock_timeout = '{int(self.patience * 1000)}ms'")
        try:
            if valid is not None:  # an invalid leftover of an interrupted build
                await self._reporting_waits(
                    f"index {name}", f"DROP INDEX CONCURRENTLY IF EXISTS {schema}.{name}"
                )
            await self._reporting_waits(f"index {name}", concurrent)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate in _RETRY_SQLSTATES:
                raise MigrationError(
                    f"index {name}: could not be built within {self.patience:.0f} s "
                    "(it waits for older transactions to end); "
                    f"{await self._lock_holders()}"
                ) from exc
            raise MigrationError(f"index {name} could not be built: {_one_line(exc)}") from exc
        finally:
            await self.conn.execute("RESET lock_timeout")

    async def drop_index(self, schema: str, name: str) -> None:
        """DROP INDEX CONCURRENTLY (blocks nobody; waits, up to `patience`, for transactions
        using the table)."""
        if self.dry_run:
            await self.execute(f"index {name}", f"DROP INDEX IF EXISTS {schema}.{name}")
            return
        await self.conn.execute(f"SET lock_timeout = '{int(self.patience * 1000)}ms'")
        try:
            await self._reporting_waits(f"index {name}", f"DROP INDEX CONCURRENTLY IF EXISTS {schema}.{name}")
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"index {name} could not be dropped: {_one_line(exc)}") from exc
        finally:
            await self.conn.execute("RESET lock_timeout")

    async def vacuum(self, table: str) -> None:
        """Marks the table's pages all-visible, so that an index-only scan reads no row (and
        refreshes its statistics). A dry run, being one transaction, only analyzes it."""
        if self.dry_run:
            await self.execute(f"analyzing {table}", f"ANALYZE {table}")
        else:
            await self.conn.execute(f"VACUUM (ANALYZE) {table}")

    async def prebuild_indexes(self, migration: str) -> None:
        """Build the indexes a pending migration creates (`CREATE INDEX IF NOT EXISTS`) before
        it runs, concurrently, so that inside its transaction each one is already there. Indexes
        on a table or column the migration itself creates are left to it: such a table is new,
        or the column is, so the index is built on nothing. Should the migration then fail, the
        indexes stay: they are what it creates anyway, and the next run finds them built."""
        if self.dry_run:
            return
        for found in _INDEX.finditer(migration):
            schema, table, name = found.group(3), found.group(4), found.group(2)
            if not await self.exists(f"{schema}.{table}"):
                continue
            try:
                await self.build_index(found.group(0), schema, name)
            except MigrationError as exc:
                if isinstance(exc.__cause__, asyncpg.UndefinedColumnError):
                    continue
                raise

    async def _reporting_waits(self, what: str, statement: str) -> None:
        """Run `statement` (a concurrent index build or drop) on migrate's connection; while it
        waits, log every WAIT_REPORT_SECONDS the oldest open transactions, read on a second
        connection (migrate's own is busy with the statement)."""
        running = asyncio.ensure_future(self.conn.execute(statement))
        started = time.monotonic()
        try:
            while not (await asyncio.wait({running}, timeout=WAIT_REPORT_SECONDS))[0]:
                holders = await self._holders_aside()
                if holders:
                    log.info(
                        "%s: waiting %.0f s so far for older transactions to end (for up to %.0f s); %s",
                        what,
                        time.monotonic() - started,
                        self.patience,
                        holders,
                    )
        except BaseException:
            running.cancel()  # migrate itself was cancelled: the statement is cancelled too
            raise
        running.result()

    async def _holders_aside(self) -> str | None:
        if self.dsn is None:
            return None
        try:
            side = await asyncpg.connect(
                self.dsn, server_settings={"application_name": "participation-grpc migrate (watching a wait)"}
            )
            try:
                return await self._lock_holders(side, also_not=self.conn.get_server_pid())
            finally:
                await side.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None  # only a progress line: the statement goes on regardless

    async def _lock_holders(self, conn: asyncpg.Connection | None = None, also_not: int | None = None) -> str:
        rows = await (conn or self.conn).fetch(
            """SELECT a.pid, a.application_name, a.state, left(a.query, 80) AS query,
                      round(extract(epoch FROM now() - a.xact_start)) AS seconds
               FROM pg_stat_activity a
               WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                 AND a.pid IS DISTINCT FROM $1 AND a.xact_start IS NOT NULL
               ORDER BY a.xact_start LIMIT 3""",
            also_not,
        )
        if not rows:
            return "no other transaction is open now"
        return "oldest open transactions: " + "; ".join(
            f"pid {r['pid']} ({r['application_name'] or 'no name'}, {r['state']}, open "
            f"{r['seconds']} s: {' '.join(r['query'].split())})"
            for r in rows
        )


def _one_line(exc: asyncpg.PostgresError) -> str:
    detail = getattr(exc, "detail", None)
    return " ".join(f"{exc}{' (' + detail + ')' if detail else ''}".split())
