"""Capacity and the waitlist under concurrency, through the running gRPC server."""

import asyncio
import uuid

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, serving, test_settings
from tests.participation import invariants


async def test_200_concurrent_joins_fill_10_seats_and_queue_the_rest(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=10)
    users = [await service.seed.user() for _ in range(199)]  # 200 with the organizer
    request = pb.JoinActivityRequest(activity_id=str(activity))
    replies = await asyncio.gather(*(service.call("JoinActivity", u, request) for u in users))

    registered = [r for r in replies if r.participation_status == pb.PARTICIPATION_STATUS_REGISTERED]
    waitlisted = [r for r in replies if r.participation_status == pb.PARTICIPATION_STATUS_WAITLISTED]
    assert (len(registered), len(waitlisted)) == (9, 190)
    assert sorted(r.waitlist_position for r in waitlisted) == list(range(1, 191))
    counts = await invariants(service, activity)
    assert (counts["registered"], counts["wait_counter"]) == (10, 190)
    # First come, first served: the queue order is the order in which joins were decided.
    rows = await service.seed.conn.fetch(
        "SELECT position, created_at FROM activity.waitlist_entries WHERE activity_id = $1 ORDER BY position",
        activity,
    )
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)

    # Concurrent leaves: five members and the last five in the queue at once. (Users near the
    # head could be promoted by a member's leave before their own leave runs, and would then
    # free a seat of their own: right, but not the exact count asserted here.)
    tail = sorted(waitlisted, key=lambda r: r.waitlist_position)[-5:]
    leavers = [r.user_id for r in registered[:5]] + [r.user_id for r in tail]
    leave = [
        service.call("LeaveActivity", uuid.UUID(u), pb.LeaveActivityRequest(activity_id=str(activity)))
        for u in leavers
    ]
    results = await asyncio.gather(*leave)
    promoted = [p for r in results for p in r.promoted_user_ids]
    assert len(promoted) == len(set(promoted)) == 5
    assert not set(promoted) & set(leavers)
    counts = await invariants(service, activity)
    assert (counts["registered"], counts["wait_counter"]) == (10, 190 - 5 - 5)


async def test_concurrent_join_and_leave_keep_invariants(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=5)
    first = [await service.seed.user() for _ in range(20)]
    request = pb.JoinActivityRequest(activity_id=str(activity))
    await asyncio.gather(*(service.call("JoinActivity", u, request) for u in first))
    second = [await service.seed.user() for _ in range(20)]
    leave = pb.LeaveActivityRequest(activity_id=str(activity))
    await asyncio.gather(
        *(service.call("JoinActivity", u, request) for u in second),
        *(service.call("LeaveActivity", u, leave) for u in first[:10]),
    )
    counts = await invariants(service, activity)
    assert counts["registered"] == 5
    assert counts["registered"] + counts["wait_counter"] == 1 + 40 - 10


async def test_300_joins_and_leaves_at_size_keep_invariants(database_url: str) -> None:
    """Contract 4.3 at size: 10,000 members and 50 free seats; 250 newcomers join while 50
    members leave, all at once. 100 seats go round, the other 150 wait, in order, 1..n. (The
    waits are bounded generously: all 300 queue on one activity, however slow the machine.)"""
    patient = test_settings(
        database_url,
        db_lock_timeout_ms=120_000,
        db_acquire_timeout_ms=120_000,
        db_statement_timeout_ms=120_000,
    )
    async with serving(patient) as service:
        await race_at_size(service)


async def race_at_size(service: Service) -> None:
    seed = service.seed
    organizer = await seed.user()
    activity = await seed.activity(organizer, max_participants=10_050)
    members = [uuid.uuid4() for _ in range(9_999)]
    newcomers = [uuid.uuid4() for _ in range(250)]
    await seed.conn.copy_records_to_table(
        "users",
        schema_name="activity",
        columns=["user_id", "email", "username", "password_hash"],
        records=[(u, f"{u.hex}@example.test", u.hex, "x") for u in members + newcomers],
    )
    await seed.conn.copy_records_to_table(
        "participants",
        schema_name="activity",
        columns=["activity_id", "user_id"],
        records=[(activity, u) for u in members],
    )
    await seed.conn.execute(
        "UPDATE activity.activities SET current_participants_count = 10000 WHERE activity_id = $1", activity
    )
    join = pb.JoinActivityRequest(activity_id=str(activity))
    leave = pb.LeaveActivityRequest(activity_id=str(activity))
    leavers = members[::200]
    calls = [service.call("JoinActivity", u, join) for u in newcomers]
    for n, u in enumerate(leavers):  # spread the leaves among the joins
        calls.insert(5 * n + 2, service.call("LeaveActivity", u, leave))
    replies = await asyncio.gather(*calls)
    assert len(replies) == 300 and len(leavers) == 50

    counts = await invariants(service, activity)
    assert (counts["registered"], counts["max_participants"]) == (10_050, 10_050)  # no free seat
    assert counts["wait_counter"] == 150
    promoted = [p for r in replies if isinstance(r, pb.LeaveActivityResponse) for p in r.promoted_user_ids]
    assert len(promoted) == len(set(promoted)) and set(promoted) <= {str(u) for u in newcomers}
    places = await seed.conn.fetch(
        "SELECT user_id, 'registered' AS place FROM activity.participants WHERE activity_id = $1 "
        "AND participation_status = 'registered' AND user_id = ANY($2::uuid[]) "
        "UNION ALL SELECT user_id, 'waiting' FROM activity.waitlist_entries "
        "WHERE activity_id = $1",
        activity,
        newcomers + leavers,
    )
    assert sorted(r["user_id"] for r in places) == sorted(newcomers)  # each in one place, once
    shown = []
    token = ""
    while True:  # the organizer's view of the queue, page by page
        page = await service.call(
            "ListWaitlist",
            organizer,
            pb.ListWaitlistRequest(activity_id=str(activity), page_size=40, page_token=token),
        )
        assert page.total_size == 150
        shown += [e.position for e in page.entries]
        if not (token := page.next_page_token):
            break
    assert shown == list(range(1, 151))
