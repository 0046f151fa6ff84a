"""`participation-grpc reconcile` and `migrate` repair drift other writers left, and say so; an
overbooked activity (contract 8) keeps working."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import asyncpg

from participation_grpc.migrate import migrate
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service
from tests.seed import Seed


async def reconcile_command(database_url: str) -> list[str]:
    """Run the real command line; its output lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "participation_grpc",
        "reconcile",
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode().splitlines()


async def drifted(seed: Seed, seats: int, members: int, waiting: int) -> uuid.UUID:
    """An activity whose rows were written by someone else: `members` registered besides the
    organizer, `waiting` in the queue, and counters left at 1 and 0 (as seed.activity sets them)."""
    organizer = await seed.user()
    activity = await seed.activity(organizer, max_participants=seats)
    for _ in range(members):
        await seed.conn.execute(
            "INSERT INTO activity.participants (activity_id, user_id) VALUES ($1, $2)",
            activity,
            await seed.user(),
        )
    for position in range(waiting):
        await seed.conn.execute(
            "INSERT INTO activity.waitlist_entries (activity_id, user_id, position) VALUES ($1, $2, $3)",
            activity,
            await seed.user(),
            10 * position + 5,
        )
    return activity


async def state(seed: Seed, activity: uuid.UUID) -> tuple[int, int, int | None, int, int]:
    """(seat counter, waitlist counter, overbooking excess, registered rows, waitlist rows)."""
    row = await seed.fetchrow(
        """SELECT a.current_participants_count, a.waitlist_count,
               (SELECT excess FROM activity.activity_overbooking o
                WHERE o.activity_id = a.activity_id),
               (SELECT count(*) FROM activity.participants p WHERE p.activity_id = a.activity_id
                  AND p.participation_status = 'registered'),
               (SELECT count(*) FROM activity.waitlist_entries w
                WHERE w.activity_id = a.activity_id)
           FROM activity.activities a WHERE a.activity_id = $1""",
        activity,
    )
    return tuple(row)


async def test_reconcile_fixes_planted_drift_and_reports_each_fix(service: Service) -> None:
    seed, url = service.seed, service.settings.database_url
    assert url is not None
    low = await drifted(seed, seats=10, members=3, waiting=0)  # counter 1, rows 4
    high = await drifted(seed, seats=10, members=0, waiting=0)
    await seed.conn.execute(
        "UPDATE activity.activities SET current_participants_count = 7, "
        "waitlist_count = 4 WHERE activity_id = $1",
        high,
    )
    queued = await drifted(seed, seats=3, members=2, waiting=2)  # full, queue counter 0
    over = await drifted(seed, seats=3, members=4, waiting=1)  # 5 registered in 3 seats
    free = await drifted(seed, seats=4, members=1, waiting=3)  # 2 free seats beside a queue
    await seed.conn.execute(
        "UPDATE activity.activities SET current_participants_count = 2, "
        "waitlist_count = 3 WHERE activity_id = $1",
        free,
    )
    untouched = await drifted(seed, seats=5, members=0, waiting=0)

    lines = await reconcile_command(url)

    expected = {
        f"fixed {low} current_participants_count: 1 -> 4",
        f"fixed {high} current_participants_count: 7 -> 1",
        f"fixed {high} waitlist_count: 4 -> 0",
        f"fixed {queued} current_participants_count: 1 -> 3",
        f"fixed {queued} waitlist_count: 0 -> 2",
        f"fixed {over} current_participants_count: 1 -> 3",
        f"fixed {over} overbooking_excess: 0 -> 2",
        f"fixed {over} waitlist_count: 0 -> 1",
        f"fixed {free} seats_filled: 2 -> 4",
    }
    assert set(lines[:-1]) == expected and lines[-1] == f"{len(expected)} fixes"
    assert not any(str(untouched) in line for line in lines)
    assert await state(seed, low) == (4, 0, None, 4, 0)
    assert await state(seed, high) == (1, 0, None, 1, 0)
    assert await state(seed, queued) == (3, 2, None, 3, 2)
    assert await state(seed, over) == (3, 1, 2, 5, 1)
    assert await state(seed, free) == (4, 1, None, 4, 1)
    assert await reconcile_command(url) == ["nothing to fix"]


async def test_migrate_reconciles_after_the_procedures(service: Service) -> None:
    seed, url = service.seed, service.settings.database_url
    assert url is not None
    activity = await drifted(seed, seats=10, members=2, waiting=0)
    await migrate(url)
    assert await state(seed, activity) == (3, 0, None, 3, 0)


async def overbooked(service: Service) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """Five registered (the organizer and four members) in three seats, reconciled;
    (activity, organizer, members)."""
    seed = service.seed
    activity = await drifted(seed, seats=3, members=4, waiting=0)
    assert service.settings.database_url is not None
    await reconcile_command(service.settings.database_url)
    organizer, *members = [
        r["user_id"]
        for r in await seed.conn.fetch(
            "SELECT user_id FROM activity.participants WHERE activity_id = $1 "
            "ORDER BY role = 'member', user_id",
            activity,
        )
    ]
    return activity, organizer, members


async def test_overbooked_activity_keeps_everyone_and_sends_joins_to_the_waitlist(service: Service) -> None:
    activity, organizer, _ = await overbooked(service)
    listed = await service.call(
        "ListParticipants", organizer, pb.ListParticipantsRequest(activity_id=str(activity))
    )
    assert listed.total_size == 5 and len(listed.participants) == 5
    joiner = await service.seed.user()
    reply = await service.call("JoinActivity", joiner, pb.JoinActivityRequest(activity_id=str(activity)))
    assert reply.participation_status == pb.PARTICIPATION_STATUS_WAITLISTED
    assert reply.waitlist_position == 1
    assert await state(service.seed, activity) == (3, 1, 2, 5, 1)


async def test_leaves_of_an_overbooked_activity_promote_only_into_a_really_free_seat(
    service: Service,
) -> None:
    activity, _, members = await overbooked(service)
    waiting = await service.seed.user()
    await service.call("JoinActivity", waiting, pb.JoinActivityRequest(activity_id=str(activity)))
    left = await service.call("LeaveActivity", members[0], pb.LeaveActivityRequest(activity_id=str(activity)))
    assert list(left.promoted_user_ids) == []
    assert await state(service.seed, activity) == (3, 1, 1, 4, 1)
    cancelled = await service.call(
        "CancelParticipation", members[1], pb.CancelParticipationRequest(activity_id=str(activity))
    )
    assert list(cancelled.promoted_user_ids) == []
    assert await state(service.seed, activity) == (3, 1, None, 3, 1)
    freed = await service.call(
        "LeaveActivity", members[2], pb.LeaveActivityRequest(activity_id=str(activity))
    )
    assert list(freed.promoted_user_ids) == [str(waiting)]
    assert await state(service.seed, activity) == (3, 0, None, 3, 0)


async def test_reconcile_function_is_callable_by_platform_tools(database_url: str) -> None:
    """activity.pa_reconcile() does the same in one statement, for a psql session."""
    conn = await asyncpg.connect(database_url)
    seed = Seed(conn)
    activity = await drifted(seed, seats=10, members=1, waiting=0)
    rows = await conn.fetch("SELECT * FROM activity.pa_reconcile()")
    assert [tuple(r) for r in rows] == [(activity, "current_participants_count", 1, 2)]
    assert await conn.fetch("SELECT * FROM activity.pa_reconcile()") == []
    await conn.close()
