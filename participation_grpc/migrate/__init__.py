"""`participation-grpc migrate`: schema migrations (each applied once), the procedures (replaced
when they change) and the repairs of data an earlier service left inconsistent.

The order of a run:
1. checks that change nothing: no applied migration was edited, nothing of
   another service is built on a procedure about to be replaced (checks.py);
2. each pending migration, after its online preparation (preparations.py), in one transaction;
3. the procedures, in one transaction;
4. the repairs of the record (sql/repairs/), in one transaction, then reconcile (counters,
   overbooking, free seats beside a queue: participation_grpc/reconcile.py), one transaction
   per activity; all of it reported kind by kind.
Every step completes or changes nothing, and may be run again: a step that failed is rolled
back and the next run starts with it. No step makes readers of the service's tables wait long
(steps.py says how).

Safe to run from several replicas at once: one advisory lock serialises whole runs. A dry run
does all of it in one transaction that is rolled back, and reports the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib.resources.abc import Traversable

import asyncpg

from participation_grpc.migrate import checks
from participation_grpc.migrate.preparations import PREPARATIONS
from participation_grpc.migrate.report import MigrationError, Report
from participation_grpc.migrate.sources import PACKAGED, Source, checksum
from participation_grpc.migrate.steps import Steps
from participation_grpc.reconcile import reconcile

__all__ = ["MigrationError", "Report", "migrate"]

log = logging.getLogger(__name__)
LOCK_KEY = 0x7061727469636970  # "particip"
_LOCK_POLL_SECONDS = 0.2
PATIENCE_SECONDS = 600.0

_BOOKKEEPING = f"""
CREATE SCHEMA IF NOT EXISTS activity;
CREATE TABLE IF NOT EXISTS {checks.BOOKKEEPING} (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""
# Older versions of the same procedures may have other signatures, which CREATE OR REPLACE
# cannot change: every overload of each name this service defines is dropped first.
_DROP_OVERLOADS = """
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'activity' AND p.proname = ANY ($names$) LOOP
        EXECUTE 'DROP FUNCTION ' || f;
    END LOOP;
END $$;
"""
_RECORD = (
    f"INSERT INTO {checks.BOOKKEEPING} (version, checksum) VALUES ($1, $2) "
    "ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()"
)


async def migrate(
    dsn: str, *, dry_run: bool = False, sql: Traversable = PACKAGED, patience: float = PATIENCE_SECONDS
) -> Report:
    """Bring the database up to date; returns what was applied and repaired. Raises
    MigrationError (one line for the operator) when it refuses or a step fails."""
    started = time.monotonic()
    source = Source.read(sql)
    try:
        # No statement cache: the repairs replace one temporary function under the same name.
        conn = await asyncpg.connect(
            dsn, statement_cache_size=0, server_settings={"application_name": "participation-grpc migrate"}
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise MigrationError(f"cannot connect to the database: {exc}") from exc
    try:
        return await _run(conn, dsn, source, dry_run, patience, started)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Outside the steps (which name themselves): the checks, the lock, the connection.
        kept = (
            "dry run: nothing was changed"
            if dry_run
            else "every step applied so far is complete; run migrate again"
        )
        raise MigrationError(f"stopped: {' '.join(str(exc).split())}; {kept}") from exc
    finally:
        await conn.close()  # closing the session releases the advisory lock


async def _run(
    conn: asyncpg.Connection, dsn: str, source: Source, dry_run: bool, patience: float, started: float
) -> Report:
    """The run on migrate's connection: checks, then the steps (all in one transaction that is
    rolled back, in a dry run)."""
    await _lock(conn)
    done = await checks.recorded(conn)
    checks.refuse_edited_migrations(source, done)
    replace_procedures = await checks.procedures_pending(conn, source, done)
    report = Report(dry_run=dry_run)
    if replace_procedures:
        await checks.refuse_dependents(conn, source)
        for caller in await checks.callers_by_name(conn, source):
            report.add(checks.CALLERS, caller, changed=False)
    steps = Steps(conn, dry_run=dry_run, patience=patience, dsn=dsn)
    outer = conn.transaction()
    if dry_run:
        await outer.start()
    try:
        await steps.execute("bookkeeping", _BOOKKEEPING)
        await _apply_migrations(steps, source, done, report)
        if replace_procedures:
            await _apply_procedures(steps, source, report)
        await _repair(steps, source, report)
        await _reconcile(conn, report, dry_run)
    finally:
        if dry_run:
            await outer.rollback()
    report.seconds = time.monotonic() - started
    return report


async def _lock(conn: asyncpg.Connection) -> None:
    """Wait for other replicas' runs without holding a snapshot: a session blocked inside
    pg_advisory_lock would be a transaction that CREATE INDEX CONCURRENTLY, run by the replica
    holding the lock, waits for."""
    waiting = False
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        if not waiting:
            log.info("another migrate is running; waiting for it")
            waiting = True
        await asyncio.sleep(_LOCK_POLL_SECONDS)


async def _apply_migrations(steps: Steps, source: Source, done: dict[str, str], report: Report) -> None:
    for name, text in source.migrations:
        if name in done:
            continue
        started = time.monotonic()
        preparation = PREPARATIONS.get(name)
        if preparation:
            await preparation.before(steps, report)
        await steps.prebuild_indexes(text)

        async def apply(conn: asyncpg.Connection, name: str = name, text: str = text) -> None:
            await conn.execute(text)
            await conn.execute(_RECORD, name, checksum(text))

        await steps.transaction(f"migration {name}", apply)
        if preparation and preparation.after:
            await preparation.after(steps, report)
        log.info("%sapplied migration %s (%.1f s)", _dry(steps.dry_run), name, time.monotonic() - started)
        report.applied.append(name)


async def _apply_procedures(steps: Steps, source: Source, report: Report) -> None:
    names = source.procedure_names

    async def apply(conn: asyncpg.Connection) -> None:
        await conn.execute(_DROP_OVERLOADS.replace("$names$", _sql_name_array(names)))
        await conn.execute(source.procedures)
        await conn.execute(_RECORD, checks.PROCEDURES_VERSION, source.procedures_checksum)

    started = time.monotonic()
    await steps.transaction("procedures", apply)
    log.info("%sapplied %d procedures (%.1f s)", _dry(steps.dry_run), len(names), time.monotonic() - started)
    report.applied.append(checks.PROCEDURES_VERSION)


async def _repair(steps: Steps, source: Source, report: Report) -> None:
    """Each repair file defines pg_temp.repair() RETURNS TABLE (kind text, id text, changed
    boolean): it fixes one kind of inconsistency and returns a row per thing it fixed (or, with
    changed false, found and left). All of them run in one transaction, after the procedures,
    which some of them call (a promotion is made exactly as a leave makes it)."""

    async def run(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        found: list[asyncpg.Record] = []
        for _, text in source.repairs:
            await conn.execute(text)
            found += await conn.fetch("SELECT kind, id, changed FROM pg_temp.repair()")
        await conn.execute("DROP FUNCTION IF EXISTS pg_temp.repair()")
        return found

    started = time.monotonic()
    for row in await steps.transaction("repairs", run):
        report.add(row["kind"], row["id"], changed=row["changed"])
    log.info("%srepairs done (%.1f s)", _dry(steps.dry_run), time.monotonic() - started)


# reconcile's kinds of fix, as the report names them, and how it shows before -> after.
_RECONCILED = {
    "current_participants_count": ("seat counters out of step with the rows: recomputed", "seats"),
    "waitlist_count": ("waitlist counters out of step with the queue: recomputed", "waiting"),
    "overbooking_excess": (
        "overbooked activities (more registered than max_participants): the "
        "counter stays at max_participants, the seats beyond it recorded",
        "excess",
    ),
    "seats_filled": (
        "free seats beside a waiting queue: filled from its head as a leave would",
        "registered",
    ),
}


async def _reconcile(conn: asyncpg.Connection, report: Report, dry_run: bool) -> None:
    """After the repairs, which correct the rows but leave the counters to this: the procedures
    trust the counters, so they must match the rows before the service serves."""
    started = time.monotonic()
    fixes = await reconcile(conn)
    for fix in fixes:
        label, unit = _RECONCILED.get(fix.kind, (fix.kind, fix.kind))
        report.add(label, f"{fix.activity_id} ({unit} {fix.before} -> {fix.after})")
    log.info("%sreconcile: %d fixes (%.1f s)", _dry(dry_run), len(fixes), time.monotonic() - started)


def _dry(dry_run: bool) -> str:
    """The log lines of a dry run say so: what they call applied is rolled back at the end."""
    return "dry run, rolled back at the end: " if dry_run else ""


def _sql_name_array(names: list[str]) -> str:
    # Names come from our own files and match \w+, so quoting them is enough.
    return "ARRAY[" + ", ".join(f"'{n}'" for n in names) + "]::name[]"
