"""What makes migrate refuse before it changes anything."""

from __future__ import annotations

import asyncpg

from participation_grpc.migrate.report import MigrationError
from participation_grpc.migrate.sources import Source, checksum

BOOKKEEPING = "activity.participation_schema_migrations"
PROCEDURES_VERSION = "procedures"


async def recorded(conn: asyncpg.Connection) -> dict[str, str]:
    """version -> checksum of every step applied so far (none on a database never migrated)."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", BOOKKEEPING):
        return {}
    rows = await conn.fetch(f"SELECT version, checksum FROM {BOOKKEEPING}")
    return {r["version"]: r["checksum"] for r in rows}


def refuse_edited_migrations(source: Source, done: dict[str, str]) -> None:
    """An applied migration is history: a file that no longer matches what was applied would
    make this database differ from every other one migrated with it."""
    edited = [name for name, text in source.migrations if name in done and done[name] != checksum(text)]
    if edited:
        raise MigrationError(
            f"refused: migration {', '.join(edited)} was changed after it was applied here (its "
            "checksum differs from the one recorded); restore the released file and put the "
            "change in a new migration. Nothing was changed."
        )


async def procedures_pending(conn: asyncpg.Connection, source: Source, done: dict[str, str]) -> bool:
    """Whether the procedures are (re)applied: their text changed, or a name is missing or has
    a foreign overload beside ours (a predecessor's, or one created since)."""
    names = source.procedure_names
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'activity' AND p.proname = ANY ($1::name[])",
        names,
    )
    return done.get(PROCEDURES_VERSION) != source.procedures_checksum or found != len(names)


async def refuse_dependents(conn: asyncpg.Connection, source: Source) -> None:
    """Applying the procedures drops every function of their names first (an older version's
    signatures cannot be replaced in place). Something built on one of them (a view, a
    function with a SQL-standard body, a default) would make that drop fail halfway through the
    upgrade; name it now instead, before anything is changed."""
    rows = await conn.fetch(
        """SELECT DISTINCT
                  CASE WHEN d.classid = 'pg_rewrite'::regclass
                       THEN (SELECT CASE c.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END
                                    || r.ev_class::regclass::text
                             FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                             WHERE r.oid = d.objid)
                       WHEN d.classid = 'pg_proc'::regclass
                       THEN 'function ' || d.objid::regprocedure::text
                       ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END AS dependent,
                  p.oid::regprocedure::text AS procedure
           FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           JOIN pg_depend d ON d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid
                           AND d.deptype = 'n'
           WHERE n.nspname = 'activity' AND p.proname = ANY ($1::name[])
             -- our own functions calling each other are replaced together
             AND NOT (d.classid = 'pg_proc'::regclass
                      AND EXISTS (SELECT 1 FROM pg_proc q WHERE q.oid = d.objid
                                    AND q.pronamespace = n.oid AND q.proname = ANY ($1::name[])))
           ORDER BY 1, 2""",
        source.procedure_names,
    )
    if rows:
        named = "; ".join(f"{r['dependent']} depends on {r['procedure']}" for r in rows)
        raise MigrationError(
            f"refused: {named}. migrate replaces that procedure, so drop the dependent object "
            "(or rebuild it on the new procedure after migrating) and run migrate again. "
            "Nothing was changed."
        )


CALLERS = (
    "functions of other services that call a replaced procedure by name (check that their "
    "calls fit its new signature)"
)


async def callers_by_name(conn: asyncpg.Connection, source: Source) -> list[str]:
    """Functions outside this service whose body names one of its procedures. A PL/pgSQL body
    records no dependency, so nothing stops such a function from breaking when a signature it
    calls is replaced; migrate cannot tell whether its call still fits, so it reports them."""
    procedures = [n for n in source.procedure_names if n.startswith("sp_")]
    rows = await conn.fetch(
        r"""SELECT p.oid::regprocedure::text AS caller,
                   string_agg(DISTINCT m[1], ', ' ORDER BY m[1]) AS called
            FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace
            CROSS JOIN LATERAL regexp_matches(p.prosrc,
                '\m(' || array_to_string($1::text[], '|') || ')\M', 'g') AS m
            WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\_temp\_%'
              AND NOT (n.nspname = 'activity' AND p.proname = ANY ($2::name[]))
            GROUP BY 1 ORDER BY 1""",
        procedures,
        source.procedure_names,
    )
    return [f"{r['caller']} calls {r['called']}" for r in rows]
