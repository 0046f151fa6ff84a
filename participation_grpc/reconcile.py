"""Counters recomputed from the rows, for drift left by other writers (`participation-grpc reconcile`)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class Fix:
    """One repair: an activity's counter (or overbooking, or free seats) from `before` to `after`."""

    activity_id: UUID
    kind: str
    before: int
    after: int

    def __str__(self) -> str:
        return f"{self.activity_id} {self.kind}: {self.before} -> {self.after}"


async def reconcile(conn: asyncpg.Connection) -> list[Fix]:
    """Repair every activity that needs it, each in a transaction of its own, so an activity's
    lock is held only while that activity is recounted (the SQL does the work:
    activity.pa_reconcile_activity)."""
    fixes: list[Fix] = []
    for candidate in await conn.fetch("SELECT activity_id FROM activity.pa_reconcile_candidates()"):
        rows = await conn.fetch("SELECT * FROM activity.pa_reconcile_activity($1)", candidate["activity_id"])
        fixes.extend(Fix(r["activity_id"], r["kind"], r["before"], r["after"]) for r in rows)
    return fixes


async def reconcile_database(dsn: str) -> list[Fix]:
    conn = await asyncpg.connect(dsn)
    try:
        return await reconcile(conn)
    finally:
        await conn.close()
