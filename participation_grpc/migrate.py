"""Schema migrations (each applied once) and the procedures (replaced when they change).

Safe to run from several replicas at once: everything happens under one advisory lock, and each
step is one transaction, so a failure leaves nothing half-applied.
"""

from __future__ import annotations

import hashlib
import logging
import re
from importlib.resources import files

import asyncpg

from participation_grpc.reconcile import reconcile

log = logging.getLogger(__name__)
SQL = files("participation_grpc.sql")
LOCK_KEY = 0x7061727469636970  # "particip"
PROCEDURES_VERSION = "procedures"
_DEFINED = re.compile(r"CREATE OR REPLACE FUNCTION activity\.(\w+)\s*\(")

_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS activity;
CREATE TABLE IF NOT EXISTS activity.participation_schema_migrations (
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


def _read(folder: str) -> list[tuple[str, str]]:
    return sorted((p.name, p.read_text()) for p in (SQL / folder).iterdir() if p.name.endswith(".sql"))


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def migrate(dsn: str) -> list[str]:
    """Apply what is missing; returns the names of the steps applied."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await conn.execute(_BOOKKEEPING)
        applied = await _apply_migrations(conn)
        if await _apply_procedures(conn):
            applied.append(PROCEDURES_VERSION)
        for fix in await reconcile(conn):  # drift other writers left: the procedures trust counters
            log.warning("reconciled %s", fix)
        return applied
    finally:
        await conn.close()  # closing the session releases the advisory lock


async def _apply_migrations(conn: asyncpg.Connection) -> list[str]:
    done = {r["version"] for r in
            await conn.fetch("SELECT version FROM activity.participation_schema_migrations")}
    applied = []
    for name, text in _read("migrations"):
        if name in done:
            continue
        async with conn.transaction():
            await conn.execute(text)
            await conn.execute("INSERT INTO activity.participation_schema_migrations "
                               "(version, checksum) VALUES ($1, $2)", name, _checksum(text))
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


async def _apply_procedures(conn: asyncpg.Connection) -> bool:
    text = "\n".join(body for _, body in _read("procedures"))
    checksum = _checksum(text)
    names = sorted(set(_DEFINED.findall(text)))
    current = await conn.fetchval("SELECT checksum FROM activity.participation_schema_migrations "
                                  "WHERE version = $1", PROCEDURES_VERSION)
    if current == checksum and await _exactly_ours(conn, names):
        return False
    async with conn.transaction():
        await conn.execute(_DROP_OVERLOADS.replace("$names$", _sql_text_array(names)))
        await conn.execute(text)
        await conn.execute(
            "INSERT INTO activity.participation_schema_migrations (version, checksum) "
            "VALUES ($1, $2) ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum, "
            "applied_at = now()", PROCEDURES_VERSION, checksum)
    log.info("applied %d procedures", len(names))
    return True


async def _exactly_ours(conn: asyncpg.Connection, names: list[str]) -> bool:
    """One function per name: no name missing, no foreign overload beside ours."""
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'activity' AND p.proname = ANY ($1::name[])", names)
    return bool(found == len(names))


def _sql_text_array(names: list[str]) -> str:
    # Names come from our own files and match \w+, so quoting them is enough.
    return "ARRAY[" + ", ".join(f"'{n}'" for n in names) + "]::name[]"
