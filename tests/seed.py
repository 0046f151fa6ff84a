"""Platform data written straight into the tables other services own, as they would write it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg


def now() -> datetime:
    return datetime.now(UTC)


class Seed:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._n = 0

    async def user(
        self,
        *,
        status: str = "active",
        subscription: str = "free",
        subscription_expires_at: datetime | None = None,
        ban_expires_at: datetime | None = None,
        username: str | None = None,
        first_name: str = "Test",
    ) -> uuid.UUID:
        user_id = uuid.uuid4()
        self._n += 1
        name = username or f"user{self._n}_{user_id.hex[:6]}"
        await self.conn.execute(
            """INSERT INTO activity.users (user_id, email, username, password_hash, first_name,
                   last_name, main_photo_url, subscription_level, subscription_expires_at, status,
                   ban_expires_at)
               VALUES ($1, $2, $3, 'x', $4, 'Tester', $5, $6, $7, $8, $9)""",
            user_id,
            f"{name}@example.test",
            name,
            first_name,
            f"https://img.test/{name}.jpg",
            subscription,
            subscription_expires_at,
            status,
            ban_expires_at,
        )
        return user_id

    async def activity(
        self,
        organizer: uuid.UUID,
        *,
        privacy: str = "public",
        type_: str = "standard",
        status: str = "published",
        starts_in: timedelta = timedelta(days=7),
        max_participants: int = 10,
        joinable_at_free: datetime | None = None,
        title: str = "Activity",
    ) -> uuid.UUID:
        """An activity with its organizer registered in the first seat, as the platform does."""
        activity_id = uuid.uuid4()
        scheduled = now() + starts_in
        created = min(now(), scheduled - timedelta(days=1))
        await self.conn.execute(
            """INSERT INTO activity.activities (activity_id, organizer_user_id, title, description,
                   activity_type, activity_privacy_level, status, scheduled_at, duration_minutes,
                   joinable_at_free, max_participants, current_participants_count, location_name,
                   city, created_at)
               VALUES ($1, $2, $3, 'Bring water', $4, $5, $6, $7, 90, $8, $9, 1, 'Park',
                       'Amsterdam', $10)""",
            activity_id,
            organizer,
            title,
            type_,
            privacy,
            status,
            scheduled,
            joinable_at_free,
            max_participants,
            created,
        )
        await self.conn.execute(
            """INSERT INTO activity.participants (activity_id, user_id, role, participation_status,
                   joined_at) VALUES ($1, $2, 'organizer', 'registered', $3)""",
            activity_id,
            organizer,
            created,
        )
        return activity_id

    async def start(self, activity_id: uuid.UUID, ago: timedelta = timedelta(minutes=1)) -> None:
        """The activity begins (it began `ago`), as time passing would have it."""
        await self.conn.execute(
            "UPDATE activity.activities SET created_at = $2::timestamptz - interval '1 day', "
            "scheduled_at = $2 WHERE activity_id = $1",
            activity_id,
            now() - ago,
        )

    async def block(self, blocker: uuid.UUID, blocked: uuid.UUID) -> None:
        await self.conn.execute(
            "INSERT INTO activity.user_blocks (blocker_user_id, blocked_user_id) VALUES ($1, $2)",
            blocker,
            blocked,
        )

    async def friends(self, a: uuid.UUID, b: uuid.UUID, status: str = "accepted") -> None:
        low, high = sorted((a, b))
        await self.conn.execute(
            """INSERT INTO activity.friendships (user_id_1, user_id_2, status, initiated_by,
                   accepted_at) VALUES ($1, $2, $3, $1, $4)""",
            low,
            high,
            status,
            now() if status == "accepted" else None,
        )

    async def invitation(
        self,
        activity_id: uuid.UUID,
        user_id: uuid.UUID,
        by: uuid.UUID,
        *,
        expires_in: timedelta = timedelta(hours=72),
        status: str = "pending",
    ) -> uuid.UUID:
        invitation_id: uuid.UUID = await self.conn.fetchval(
            """INSERT INTO activity.activity_invitations (activity_id, user_id, invited_by_user_id,
                   status, invited_at, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING invitation_id""",
            activity_id,
            user_id,
            by,
            status,
            min(now(), now() + expires_in - timedelta(hours=1)),
            now() + expires_in,
        )
        return invitation_id

    async def participant(
        self,
        activity_id: uuid.UUID,
        user_id: uuid.UUID,
        *,
        role: str = "member",
        status: str = "registered",
        attendance: str = "registered",
    ) -> None:
        """A participants row as the platform would hold it, with the seat counter kept true
        (also for activities that have already started, which nobody can join any more)."""
        await self.conn.execute(
            """INSERT INTO activity.participants (activity_id, user_id, role, participation_status,
                   attendance_status, joined_at) VALUES ($1, $2, $3, $4, $5, now())""",
            activity_id,
            user_id,
            role,
            status,
            attendance,
        )
        await self.conn.execute(
            """UPDATE activity.activities SET current_participants_count =
                   (SELECT count(*) FROM activity.participants p WHERE p.activity_id = $1
                      AND p.participation_status = 'registered')
               WHERE activity_id = $1""",
            activity_id,
        )

    async def user_counters(self, user_id: uuid.UUID) -> dict[str, Any]:
        row = await self.conn.fetchrow(
            """SELECT no_show_count, activities_attended_count, verification_count
               FROM activity.users WHERE user_id = $1""",
            user_id,
        )
        assert row is not None, f"no user {user_id}"
        return dict(row)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record:
        """The query's first row, which the test expects to exist."""
        row = await self.conn.fetchrow(query, *args)
        assert row is not None, f"no row from {query}"
        return row

    async def counts(self, activity_id: uuid.UUID) -> dict[str, Any]:
        """The activity's counters next to the real counts, and the waitlist positions as
        callers see them (activity.waitlist_positions, queue order)."""
        row = await self.conn.fetchrow(
            """SELECT a.current_participants_count AS counter, a.waitlist_count AS wait_counter,
                   a.max_participants,
                   (SELECT count(*) FROM activity.participants p WHERE p.activity_id = a.activity_id
                      AND p.participation_status = 'registered') AS registered,
                   (SELECT coalesce(array_agg(w.position ORDER BY w.position), '{}')
                      FROM activity.waitlist_positions w WHERE w.activity_id = a.activity_id)
                      AS positions
               FROM activity.activities a WHERE a.activity_id = $1""",
            activity_id,
        )
        assert row is not None, f"no activity {activity_id}"
        return dict(row)


async def user_and_activity(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A user and somebody else's activity for them to join, written on a connection of its own:
    for tests whose server runs elsewhere (another process, another venv) without a Seed."""
    conn = await asyncpg.connect(database_url)
    try:
        seed = Seed(conn)
        organizer, user = await seed.user(), await seed.user()
        return user, await seed.activity(organizer)
    finally:
        await conn.close()
