"""Work done before a migration, online, so that the migration's own transaction is short.

Migrations 0002 and 0004 were released before anyone ran them on the predecessor's tables, and
an applied migration never changes (its checksum is checked). On those tables they would hold
ACCESS EXCLUSIVE locks while renumbering, backfilling and validating hundreds of thousands of
rows, and they trip over the predecessor's NULL waitlist ids (0002's renumbering and 0004's
backfill both join on the id, skip those rows, and 0004 then fails on SET NOT NULL). So before
each of them runs, its long work is done here in small steps (steps.py), or made unnecessary,
and the migration then finds it done: every statement of it is a no-op or a catalog change.

A preparation runs only while its migration is pending, and only where the predecessor's table
exists (on a new database the migration creates the table itself). Each one is idempotent: if
migrate stops halfway, what was committed is valid (ids filled, positions in queue order, an
index built) and the next run carries on from there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from participation_grpc.migrate.report import Report
from participation_grpc.migrate.steps import Steps

WAITLIST = "activity.waitlist_entries"
_BATCH = 5000

NULL_IDS = "waitlist entries without an id: given one"
POSITIONS = "waitlists with duplicate or gapped positions: renumbered in queue order"

Hook = Callable[[Steps, Report], Awaitable[None]]


@dataclass(frozen=True)
class Preparation:
    before: Hook
    after: Hook | None = None


async def _constraint_exists(steps: Steps, name: str) -> bool:
    return bool(
        await steps.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
            WAITLIST,
            name,
        )
    )


async def _column_nullable(steps: Steps, column: str) -> bool | None:
    """None when the column does not exist."""
    return await steps.conn.fetchval(  # type: ignore[no-any-return]
        "SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 "
        "AND NOT attisdropped",
        WAITLIST,
        column,
    )


async def fill_waitlist_ids(steps: Steps, report: Report) -> None:
    """Before anything joins on waitlist_id. The predecessor's column had a default but allowed
    NULL, and rows written with an explicit NULL exist."""
    rows = await steps.batches(
        "filling NULL waitlist ids",
        f"""
        UPDATE {WAITLIST} w SET waitlist_id = gen_random_uuid()
        WHERE w.ctid = ANY (ARRAY(SELECT ctid FROM {WAITLIST} WHERE waitlist_id IS NULL LIMIT {_BATCH}))
        RETURNING w.activity_id || '/' || w.user_id AS id""",
    )
    for row in rows:
        report.add(NULL_IDS, row["id"])


async def _make_not_null_cheap(steps: Steps, column: str) -> None:
    """A validated CHECK (column IS NOT NULL) lets a later SET NOT NULL skip its scan of the
    table, which it would otherwise make under an ACCESS EXCLUSIVE lock. VALIDATE takes a lock
    that readers and writers pass."""
    check = f"waitlist_entries_{column}_filled"
    if not await _column_nullable(steps, column) or await _constraint_exists(steps, check):
        return
    await steps.execute(
        f"checking {column}",
        f"ALTER TABLE {WAITLIST} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID",
    )
    await steps.execute(f"checking {column}", f"ALTER TABLE {WAITLIST} VALIDATE CONSTRAINT {check}")


async def _drop_not_null_check(steps: Steps, column: str) -> None:
    """Once the column is NOT NULL the helper CHECK says nothing more."""
    check = f"waitlist_entries_{column}_filled"
    if await _constraint_exists(steps, check) and await _column_nullable(steps, column) is False:
        await steps.execute(f"checking {column}", f"ALTER TABLE {WAITLIST} DROP CONSTRAINT IF EXISTS {check}")


# 0002 and 0004 each compute row_number() over the whole waitlist in this order while they hold
# ACCESS EXCLUSIVE locks (0002 on participants, 0004 on waitlist_entries). An index in exactly
# that order, on pages marked all-visible, turns the sort of every entry into an index-only scan
# that the window reads in order; it is dropped again once 0004 has run.
_ORDER_INDEX = "waitlist_entries_migrate_order_idx"


async def _order_index(steps: Steps) -> None:
    if steps.dry_run:  # it only shortens the locks; a dry run holds its locks to the end anyway
        return
    await steps.build_index(
        f"CREATE INDEX IF NOT EXISTS {_ORDER_INDEX} ON {WAITLIST} "
        "(activity_id, position, created_at, waitlist_id);",
        "activity",
        _ORDER_INDEX,
    )
    await steps.vacuum(WAITLIST)


async def before_service_tables(steps: Steps, report: Report) -> None:
    """0002 over the predecessor's waitlist: ids, positions 1..n in the queue order 0002 uses,
    and the two constraints 0002 adds, built without blocking."""
    if not await steps.exists(WAITLIST):
        return
    await fill_waitlist_ids(steps, report)
    # Batches of activities; the order is exactly 0002's, so 0002's UPDATE then finds nothing.
    rows = await steps.batches(
        "renumbering waitlist positions",
        f"""
        WITH ranked AS (
            SELECT waitlist_id, activity_id, position,
                   row_number() OVER (PARTITION BY activity_id
                                      ORDER BY position, created_at, waitlist_id) AS rn
            FROM {WAITLIST}),
        unordered AS (
            SELECT DISTINCT activity_id FROM ranked WHERE position <> rn ORDER BY activity_id
            LIMIT 200),
        moved AS (
            UPDATE {WAITLIST} w SET position = r.rn FROM ranked r
            WHERE r.waitlist_id = w.waitlist_id AND w.position <> r.rn
              AND r.activity_id IN (SELECT activity_id FROM unordered)
            RETURNING w.activity_id)
        SELECT DISTINCT activity_id::text AS id FROM moved""",
    )
    for row in sorted(rows, key=lambda r: str(r["id"])):
        report.add(POSITIONS, row["id"])
    if not await _constraint_exists(steps, "waitlist_entries_position_unique"):
        await steps.build_index(
            f"CREATE UNIQUE INDEX IF NOT EXISTS waitlist_entries_position_unique ON {WAITLIST} "
            "(activity_id, position);",
            "activity",
            "waitlist_entries_position_unique",
        )
        await steps.execute(
            "waitlist position constraint",
            f"ALTER TABLE {WAITLIST} ADD CONSTRAINT waitlist_entries_position_unique "
            "UNIQUE USING INDEX waitlist_entries_position_unique "
            "DEFERRABLE INITIALLY DEFERRED",
        )
    if not await _constraint_exists(steps, "waitlist_entries_position_positive"):
        await steps.execute(
            "waitlist position check",
            f"ALTER TABLE {WAITLIST} ADD CONSTRAINT waitlist_entries_position_positive "
            "CHECK (position >= 1) NOT VALID",
        )
        await steps.execute(
            "waitlist position check",
            f"ALTER TABLE {WAITLIST} VALIDATE CONSTRAINT waitlist_entries_position_positive",
        )
    await _order_index(steps)


async def before_queue_order(steps: Steps, report: Report) -> None:
    """0004 adds queued_seq, numbers every entry in queue order and makes it NOT NULL, all under
    one ACCESS EXCLUSIVE lock; 0007 drops the column again, in the same run and before any
    procedure that reads it is installed (migrations apply in order, so while 0004 is pending
    0007 is too). So the column is added here with a constant default, which writes no row
    (PostgreSQL keeps the value in the catalog), and 0004 finds nothing to number. The ids
    first, for a database an earlier migrate left with 0002 applied and 0004 failed."""
    if not await steps.exists(WAITLIST):
        return
    await fill_waitlist_ids(steps, report)
    await steps.execute(
        "adding queued_seq",
        f"ALTER TABLE {WAITLIST} ADD COLUMN IF NOT EXISTS queued_seq bigint NOT NULL DEFAULT 0",
    )
    await _order_index(steps)


async def after_queue_order(steps: Steps, report: Report) -> None:
    if await steps.exists(f"activity.{_ORDER_INDEX}"):
        await steps.drop_index("activity", _ORDER_INDEX)


async def before_waitlist_key(steps: Steps, report: Report) -> None:
    """0011 makes waitlist_id NOT NULL and the primary key."""
    if not await steps.exists(WAITLIST):
        return
    await fill_waitlist_ids(steps, report)
    await _make_not_null_cheap(steps, "waitlist_id")


async def after_waitlist_key(steps: Steps, report: Report) -> None:
    await _drop_not_null_check(steps, "waitlist_id")


PREPARATIONS = {
    "0002_service_tables.sql": Preparation(before_service_tables),
    "0004_waitlist_queue_order.sql": Preparation(before_queue_order, after_queue_order),
    "0011_waitlist_key.sql": Preparation(before_waitlist_key, after_waitlist_key),
}
