"""EVENT_RETENTION_DAYS: old events go in batches, numbering continues, a relay's backlog stays."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from participation_grpc import retention
from participation_grpc.db import Database
from participation_grpc.retention import Retention
from tests.test_event_relay import write_event


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, 1, 2)
    yield database
    await database.close()


async def age(conn: asyncpg.Connection, activity_id: uuid.UUID, days: int) -> None:
    await conn.execute(
        "UPDATE activity.participation_events SET occurred_at = now() - $2 * "
        "interval '1 day' WHERE activity_id = $1",
        activity_id,
        days,
    )


async def sequences(conn: asyncpg.Connection, activity_id: uuid.UUID) -> list[int]:
    return list(
        await conn.fetchval(
            "SELECT coalesce(array_agg(sequence ORDER BY sequence), '{}') "
            "FROM activity.participation_events WHERE activity_id = $1",
            activity_id,
        )
    )


async def test_events_past_the_retention_are_deleted_in_batches_and_numbering_continues(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "BATCH_SIZE", 3)
    conn = await asyncpg.connect(database_url)
    old, recent = uuid.uuid4(), uuid.uuid4()
    try:
        for _ in range(7):
            await write_event(conn, old)
        await write_event(conn, recent)
        await age(conn, old, 31)
        await age(conn, recent, 29)
        assert await Retention(db, days=30, relayed_only=False).prune() == 7
        assert await sequences(conn, old) == []
        assert await sequences(conn, recent) == [1]
        await write_event(conn, old)
        assert await sequences(conn, old) == [8]  # never 1 again: resuming clients stay right
    finally:
        await conn.close()


async def test_with_a_relay_only_relayed_events_are_deleted(db: Database, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    activity = uuid.uuid4()
    try:
        for _ in range(4):
            await write_event(conn, activity)
        await age(conn, activity, 40)
        # The relay has appended the first two (its cursor moved past them).
        await conn.execute(
            "SELECT activity.pa_relay_advance((SELECT min(event_id) + 1 FROM activity.participation_events))"
        )
        assert await Retention(db, days=30, relayed_only=True).prune() == 2
        assert await sequences(conn, activity) == [3, 4]
    finally:
        await conn.close()
