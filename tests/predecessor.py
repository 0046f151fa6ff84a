"""The predecessor's database (tests/predecessor_schema.sql) with every state its bugs left.

Written from ../shared/predecessor.md. Each dirty state sits in an activity of its own, under
fixed ids (`ids`), so that a test can migrate a copy and then look at exactly one case through
the RPCs. The comment on each case says what the predecessor left; the tests say what migrate
makes of it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg

SCHEMA = Path(__file__).with_name("predecessor_schema.sql")
_NAMESPACE = uuid.UUID("5f1d7a52-3c1e-4c39-9a7e-2b6f0d4e8a10")


def _id(name: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, name)


MEMBERS = 12
ids = SimpleNamespace(
    organizer=_id("user:organizer"),
    members=[_id(f"user:member{n}") for n in range(1, MEMBERS + 1)],
    banned=_id("user:banned"),
    # activities, one per state
    counters_high=_id("activity:counters-high"),
    counters_low=_id("activity:counters-low"),
    overbooked=_id("activity:overbooked"),
    duplicates=_id("activity:duplicate-positions"),
    gaps=_id("activity:gapped-positions"),
    both=_id("activity:registered-and-waitlisted"),
    waitlisted_rows=_id("activity:waitlisted-rows"),
    free_seat=_id("activity:free-seat"),
    past_free_seat=_id("activity:past-free-seat"),
    invite_only=_id("activity:invite-only"),
    cancelled=_id("activity:cancelled"),
    null_ids=_id("activity:null-ids"),
    healthy=_id("activity:healthy"),
    friends_only=_id("activity:friends-only"),
    finished=_id("activity:finished"),
    # invitations to invite_only
    inv_expired=_id("invitation:expired"),
    inv_no_expiry=_id("invitation:no-expiry"),
    inv_accepted_orphan=_id("invitation:accepted-orphan"),
    inv_declined=_id("invitation:declined"),
    inv_accepted=_id("invitation:accepted"),
)
m = ids.members  # m[0] is member1


async def install_pgcrypto(conn: asyncpg.Connection) -> None:
    """pgcrypto, whose gen_random_bytes the predecessor's uuidv7() calls. The embedded server of
    a test run without DATABASE_URL is built without it: a stand-in of the same name (random
    bytes from gen_random_uuid) keeps uuidv7() working there."""
    available = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto')"
    )
    if available:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        return
    await conn.execute("""
        CREATE FUNCTION public.gen_random_bytes(n integer) RETURNS bytea LANGUAGE sql VOLATILE AS $$
            SELECT substring(string_agg(uuid_send(gen_random_uuid()), '') FROM 1 FOR n)
            FROM generate_series(1, (n + 15) / 16)
        $$""")


async def load_schema(conn: asyncpg.Connection) -> None:
    await install_pgcrypto(conn)
    await conn.execute(SCHEMA.read_text())


async def load(conn: asyncpg.Connection) -> None:
    """The predecessor's schema and its dirty data, into an empty database."""
    await load_schema(conn)
    await _Loader(conn, datetime.now(UTC)).run()


class _Loader:
    def __init__(self, conn: asyncpg.Connection, now: datetime) -> None:
        self.conn = conn
        self.now = now

    def ago(self, **delta: float) -> datetime:
        return self.now - timedelta(**delta)

    async def run(self) -> None:
        await self.user(ids.organizer, "organizer")
        for n, user in enumerate(m, 1):
            await self.user(user, f"member{n}")
        await self.user(ids.banned, "banned", status="banned")

        # Counters too high: 2 registered, the counter says 5; waitlist_count 3, nobody waits.
        await self.activity(ids.counters_high, max_participants=10, counter=5, waiting=3)
        await self.register(ids.counters_high, m[0])
        # Counters too low on a full activity: 3 of 3 registered, 2 waiting; counters 1 and 0.
        await self.activity(ids.counters_low, max_participants=3, counter=1, waiting=0)
        await self.register(ids.counters_low, m[0], m[1])
        await self.queue(ids.counters_low, (m[2], 1), (m[3], 2))
        # Overbooked: 5 registered rows for 3 seats (joins that read a stale counter); the
        # platform's check keeps the counter itself at 3. One user waits.
        await self.activity(ids.overbooked, max_participants=3, counter=3, waiting=1)
        await self.register(ids.overbooked, m[0], m[1], m[2], m[3])
        await self.queue(ids.overbooked, (m[4], 1))
        # Duplicate positions (1, 1, 2) and gaps (2, 5, 9); the queue order is position, then
        # the time of joining.
        await self.activity(ids.duplicates, max_participants=1, counter=1, waiting=3)
        await self.queue(ids.duplicates, (m[0], 1), (m[1], 1), (m[2], 2))
        await self.activity(ids.gaps, max_participants=1, counter=1, waiting=3)
        await self.queue(ids.gaps, (m[0], 2), (m[1], 5), (m[2], 9))
        # member1 registered and still waiting (the predecessor's accept path); member2 waits.
        await self.activity(ids.both, max_participants=2, counter=2, waiting=2)
        await self.register(ids.both, m[0])
        await self.queue(ids.both, (m[0], 1), (m[1], 2))
        # Waitlisted participants rows: member1 with its entry (the predecessor kept both),
        # member2 and member3 without one (member3 joined first).
        await self.activity(ids.waitlisted_rows, max_participants=1, counter=1, waiting=1)
        await self.queue(ids.waitlisted_rows, (m[0], 1))
        await self.participant(ids.waitlisted_rows, m[0], "waitlisted", joined=self.ago(days=4))
        await self.participant(ids.waitlisted_rows, m[1], "waitlisted", joined=self.ago(days=2))
        await self.participant(ids.waitlisted_rows, m[2], "waitlisted", joined=self.ago(days=3))
        # A free seat beside a queue whose head has been banned since: a leave would drop the
        # banned user and promote member3.
        await self.activity(ids.free_seat, max_participants=3, counter=2, waiting=4)
        await self.register(ids.free_seat, m[0])
        await self.queue(ids.free_seat, (ids.banned, 1), (m[2], 2), (m[3], 3), (m[4], 4))
        # The same in an activity that has started: nobody can leave or be promoted any more.
        await self.activity(
            ids.past_free_seat, max_participants=3, counter=1, waiting=1, starts=self.ago(days=1)
        )
        await self.queue(ids.past_free_seat, (m[0], 1))
        # Invitations: pending past expires_at, pending without expires_at, accepted without a
        # participation, declined (re-inviting conflicts with the predecessor's UNIQUE), and an
        # accepted one that did register.
        await self.activity(ids.invite_only, max_participants=10, counter=2, waiting=0, privacy="invite_only")
        await self.invitation(
            ids.inv_expired, m[0], "pending", invited=self.ago(days=5), expires=self.ago(days=2)
        )
        await self.invitation(ids.inv_no_expiry, m[1], "pending", invited=self.ago(days=1), expires=None)
        await self.invitation(
            ids.inv_accepted_orphan,
            m[2],
            "accepted",
            invited=self.ago(days=3),
            expires=self.now + timedelta(days=1),
            responded=self.ago(days=2),
        )
        await self.invitation(
            ids.inv_declined,
            m[3],
            "declined",
            invited=self.ago(days=3),
            expires=self.now + timedelta(days=1),
            responded=self.ago(days=2),
        )
        await self.invitation(
            ids.inv_accepted,
            m[4],
            "accepted",
            invited=self.ago(days=3),
            expires=self.now + timedelta(days=1),
            responded=self.ago(days=2),
        )
        await self.register(ids.invite_only, m[4])
        # Cancellations as the predecessor kept them: the reason in payload, the time only in
        # updated_at. member2 cancelled without a reason.
        await self.activity(ids.cancelled, max_participants=10, counter=1, waiting=0)
        await self.participant(
            ids.cancelled,
            m[0],
            "cancelled",
            joined=self.ago(days=6),
            payload={"cancel_reason": "Knee injury", "channel": "app"},
            updated=self.ago(days=3),
        )
        await self.participant(
            ids.cancelled, m[1], "cancelled", joined=self.ago(days=6), updated=self.ago(days=2)
        )
        # Waitlist rows written with NULL ids (and a duplicate position among them).
        await self.activity(ids.null_ids, max_participants=1, counter=1, waiting=3)
        await self.queue(ids.null_ids, (m[0], 1), (m[1], 1), (m[2], 3), null_ids=2)
        # Nothing wrong here: migrate must leave it exactly as it is.
        await self.activity(ids.healthy, max_participants=5, counter=2, waiting=0)
        await self.register(ids.healthy, m[0])
        # The platform's own tables in their shapes: friendships with a varchar status (member10
        # a friend of the organizer, member11 asked), a block with a reason (member12), an
        # activity that took place yesterday (attendance goes into their confirmations table).
        await self.activity(
            ids.friends_only, max_participants=5, counter=1, waiting=0, privacy="friends_only"
        )
        await self.friendship(ids.organizer, m[9], "accepted")
        await self.friendship(ids.organizer, m[10], "pending")
        await self.conn.execute(
            "INSERT INTO activity.user_blocks (blocker_user_id, blocked_user_id, reason) "
            "VALUES ($1, $2, 'Spam')",
            ids.organizer,
            m[11],
        )
        await self.activity(ids.finished, max_participants=5, counter=3, waiting=0, starts=self.ago(days=1))
        await self.register(ids.finished, m[0], m[1])

    async def user(self, user_id: uuid.UUID, name: str, status: str = "active") -> None:
        await self.conn.execute(
            """INSERT INTO activity.users (user_id, email, username, password_hash, first_name,
                   last_name, status, bio, created_at)
               VALUES ($1, $2, $3, 'x', $4, 'Tester', $5, 'hi', $6)""",
            user_id,
            f"{name}@example.test",
            name,
            name.title(),
            status,
            self.ago(days=30),
        )

    async def activity(
        self,
        activity_id: uuid.UUID,
        *,
        max_participants: int,
        counter: int,
        waiting: int,
        privacy: str = "public",
        starts: datetime | None = None,
    ) -> None:
        """An activity of the organizer, registered in the first seat; the counters as given."""
        await self.conn.execute(
            """INSERT INTO activity.activities (activity_id, organizer_user_id, title, description,
                   activity_privacy_level, scheduled_at, duration_minutes, max_participants,
                   current_participants_count, waitlist_count, location_name, city, created_at,
                   payload)
               VALUES ($1, $2, $3, 'From the predecessor', $4, $5, 90, $6, $7, $8, 'Park',
                       'Utrecht', $9, '{"source": "rest"}')""",
            activity_id,
            ids.organizer,
            f"Activity {activity_id.hex[:6]}",
            privacy,
            starts or self.now + timedelta(days=7),
            max_participants,
            counter,
            waiting,
            self.ago(days=10),
        )
        await self.participant(
            activity_id, ids.organizer, "registered", role="organizer", joined=self.ago(days=10)
        )

    async def register(self, activity_id: uuid.UUID, *users: uuid.UUID) -> None:
        for n, user in enumerate(users):
            await self.participant(activity_id, user, "registered", joined=self.ago(days=9 - n))

    async def participant(
        self,
        activity_id: uuid.UUID,
        user_id: uuid.UUID,
        status: str,
        *,
        joined: datetime,
        role: str = "member",
        payload: dict[str, Any] | None = None,
        updated: datetime | None = None,
    ) -> None:
        await self.conn.execute(
            """INSERT INTO activity.participants (activity_id, user_id, role, participation_status,
                   joined_at, payload, hash_value, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $5, $8)""",
            activity_id,
            user_id,
            role,
            status,
            joined,
            None if payload is None else json.dumps(payload),
            f"{activity_id.hex}{user_id.hex}"[:64],
            updated or joined,
        )

    async def queue(self, activity_id: uuid.UUID, *entries: tuple[uuid.UUID, int], null_ids: int = 0) -> None:
        """Waitlist entries in the order given (each joined a day after the one before); the
        first `null_ids` of them were written with a NULL id."""
        for n, (user, position) in enumerate(entries):
            await self.conn.execute(
                """INSERT INTO activity.waitlist_entries (waitlist_id, activity_id, user_id,
                       position, created_at, payload)
                   VALUES (CASE WHEN $5 THEN NULL ELSE public.uuidv7() END, $1, $2, $3, $4,
                           '{"notified": false}')""",
                activity_id,
                user,
                position,
                self.ago(days=8 - n),
                n < null_ids,
            )

    async def friendship(self, a: uuid.UUID, b: uuid.UUID, status: str) -> None:
        await self.conn.execute(
            "INSERT INTO activity.friendships (user_id_1, user_id_2, status, initiated_by, "
            "accepted_at) VALUES ($1, $2, $3, $4, $5)",
            min(a, b),
            max(a, b),
            status,
            a,
            self.ago(days=20) if status == "accepted" else None,
        )

    async def invitation(
        self,
        invitation_id: uuid.UUID,
        user_id: uuid.UUID,
        status: str,
        *,
        invited: datetime,
        expires: datetime | None,
        responded: datetime | None = None,
    ) -> None:
        await self.conn.execute(
            """INSERT INTO activity.activity_invitations (invitation_id, activity_id, user_id,
                   invited_by_user_id, status, invited_at, responded_at, expires_at, message,
                   created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'Come along', $6)""",
            invitation_id,
            ids.invite_only,
            user_id,
            ids.organizer,
            status,
            invited,
            responded,
            expires,
        )
