"""WatchActivity through the real server: replay and resume, live across replicas, under a join
race, blocked users, authority lost, expiry, the stream limit, shutdown, no token."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import grpc

from participation_grpc.retention import Retention
from participation_grpc.settings import RateLimits
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, error_info, serving, test_settings
from tests.participation import join
from tests.watching import ended, replay, take, watch

Code = grpc.StatusCode
JOINED, WAITLISTED = pb.PARTICIPATION_EVENT_TYPE_JOINED, pb.PARTICIPATION_EVENT_TYPE_WAITLISTED


async def joiners(service: Service, activity: uuid.UUID, count: int) -> list[uuid.UUID]:
    users = [await service.seed.user() for _ in range(count)]
    for user in users:
        await join(service, user, activity)
    return users


def reason(exc: grpc.aio.AioRpcError) -> tuple[Code, str]:
    return exc.code(), error_info(exc).reason


async def test_a_stream_replays_from_after_sequence_then_goes_live_and_resumes_without_gap(
    service: Service,
) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=50)
    first = await joiners(service, activity, 5)
    stream = watch(service, activity, organizer, after_sequence=0)
    seen = await take(stream, 3)
    stream.cancel()  # the client goes away after sequence 3
    assert [(e.sequence, e.user_id) for e in seen] == [(i + 1, str(u)) for i, u in enumerate(first[:3])]

    resumed = watch(service, activity, organizer, after_sequence=seen[-1].sequence)
    replayed = await take(resumed, 2)
    assert [e.sequence for e in replayed] == [4, 5]
    later = await joiners(service, activity, 2)  # committed while the stream is open
    live = await take(resumed, 2)
    resumed.cancel()
    assert [(e.sequence, e.user_id) for e in live] == [(6, str(later[0])), (7, str(later[1]))]


async def test_without_after_sequence_a_stream_carries_changes_from_now_on(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=100)
    await joiners(service, activity, 3)
    stream = watch(service, activity, organizer)
    received = asyncio.ensure_future(take(stream, 2))
    # Changes keep coming until the stream has two: which of them were before "now" depends on
    # when the stream opened, but none of the three older events is replayed.
    while not received.done():
        await joiners(service, activity, 1)
        await asyncio.sleep(0.01)
    events = await received
    stream.cancel()
    assert events[0].sequence > 3 and events[1].sequence == events[0].sequence + 1


async def test_a_change_through_one_replica_reaches_a_watcher_on_the_other(database_url: str) -> None:
    settings = test_settings(database_url)
    async with serving(settings) as one, serving(settings) as other:
        organizer = await one.seed.user()
        activity = await one.seed.activity(organizer)
        stream = watch(other, activity, organizer, after_sequence=0)
        first = await joiners(one, activity, 1)
        assert [e.user_id for e in await take(stream, 1)] == [str(first[0])]
        # The stream now waits on the other replica: only its LISTEN connection (or its poll)
        # can tell it about the next join.
        second = await joiners(one, activity, 1)
        event = (await take(stream, 1))[0]
        stream.cancel()
        assert (event.sequence, event.user_id, event.event_type) == (2, str(second[0]), JOINED)


async def test_200_concurrent_joins_on_10_seats_while_watching_agree_with_the_database(
    service: Service,
) -> None:
    seed = service.seed
    organizer = await seed.user()
    activity = await seed.activity(organizer, max_participants=10)
    users = [await seed.user() for _ in range(199)]  # 200 with the organizer
    stream = watch(service, activity, organizer, after_sequence=0)
    watching = asyncio.ensure_future(take(stream, 199))
    replies = await asyncio.gather(*(join(service, u, activity) for u in users))
    events = await watching
    stream.cancel()

    assert [e.sequence for e in events] == list(range(1, 200))
    joined = [e.user_id for e in events if e.event_type == JOINED]
    waitlisted = [(e.waitlist_position, e.user_id) for e in events if e.event_type == WAITLISTED]
    assert (len(joined), len(waitlisted)) == (9, 190)
    registered = await seed.conn.fetch(
        "SELECT user_id::text FROM activity.participants WHERE activity_id = $1 "
        "AND participation_status = 'registered' AND role = 'member'",
        activity,
    )
    assert sorted(joined) == sorted(r["user_id"] for r in registered)
    # Positions 1..190 in the order of the stream, which is the queue's order in the table.
    assert [p for p, _ in waitlisted] == list(range(1, 191))
    queue = await seed.conn.fetch(
        "SELECT user_id::text FROM activity.waitlist_entries WHERE activity_id = $1 ORDER BY position",
        activity,
    )
    assert [u for _, u in waitlisted] == [r["user_id"] for r in queue]
    by_user = {r.user_id: r for r in replies}
    assert all(by_user[u].waitlist_position == p for p, u in waitlisted)


async def test_events_of_users_blocked_with_the_watcher_are_left_out(service: Service) -> None:
    seed = service.seed
    organizer, co_organizer, blocked, other = [await seed.user() for _ in range(4)]
    activity = await seed.activity(organizer)
    await seed.participant(activity, co_organizer, role="co_organizer")
    await seed.block(co_organizer, blocked)
    for user in (blocked, other):
        await join(service, user, activity)
    seen_by_co = await take(watch(service, activity, co_organizer, after_sequence=0), 1)
    assert [(e.sequence, e.user_id) for e in seen_by_co] == [(2, str(other))]  # 1 skipped
    assert [e.user_id for e in await replay(service, activity, organizer)] == [str(blocked), str(other)]


async def test_a_co_organizer_demoted_while_watching_is_ended_with_not_authorized(service: Service) -> None:
    seed = service.seed
    organizer, co_organizer = await seed.user(), await seed.user()
    activity = await seed.activity(organizer)
    await seed.participant(activity, co_organizer, role="co_organizer")
    stream = watch(service, activity, co_organizer, after_sequence=0)
    await joiners(service, activity, 1)
    await take(stream, 1)
    await service.call(
        "DemoteParticipant",
        organizer,
        pb.DemoteParticipantRequest(activity_id=str(activity), user_id=str(co_organizer)),
    )
    assert reason(await ended(stream)) == (Code.PERMISSION_DENIED, "NOT_AUTHORIZED")


async def test_a_watcher_blocked_by_the_organizer_loses_the_stream_without_any_event(
    service: Service,
) -> None:
    """A block is no event of the activity: the periodic re-check ends the stream (contract:
    within 5 s)."""
    seed = service.seed
    organizer, co_organizer = await seed.user(), await seed.user()
    activity = await seed.activity(organizer)
    await seed.participant(activity, co_organizer, role="co_organizer")
    stream = watch(service, activity, co_organizer, after_sequence=0)
    await joiners(service, activity, 1)
    await take(stream, 1)
    await seed.block(organizer, co_organizer)
    assert reason(await ended(stream)) == (Code.PERMISSION_DENIED, "NOT_AUTHORIZED")


async def test_who_may_watch(service: Service) -> None:
    seed = service.seed
    organizer, member, stranger = [await seed.user() for _ in range(3)]
    activity = await seed.activity(organizer)
    hidden = await seed.activity(organizer, status="draft")
    await join(service, member, activity)
    cases = [
        (member, activity, (Code.PERMISSION_DENIED, "NOT_AUTHORIZED")),
        (stranger, hidden, (Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")),
        (stranger, uuid.uuid4(), (Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")),
    ]
    for user, target, expected in cases:
        assert reason(await ended(watch(service, target, user, after_sequence=0))) == expected


async def test_bad_requests_name_the_field(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    await joiners(service, activity, 2)
    for target, after, field in (
        (activity, -1, "after_sequence"),
        (activity, 3, "after_sequence"),
        ("nope", 0, "activity_id"),
    ):
        stream = service.stub.WatchActivity(
            pb.WatchActivityRequest(activity_id=str(target), after_sequence=after),
            metadata=service.auth(organizer),
        )
        exc = await ended(stream)
        assert reason(exc) == (Code.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert field in (exc.details() or "")


async def test_resuming_before_the_retention_is_events_expired(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=20)
    await joiners(service, activity, 4)
    await service.seed.conn.execute(
        "UPDATE activity.participation_events SET occurred_at = now() - interval '40 days' "
        "WHERE activity_id = $1 AND sequence <= 2",
        activity,
    )
    assert await Retention(service.app.db, days=30, relayed_only=False).prune() == 2
    assert reason(await ended(watch(service, activity, organizer, after_sequence=1))) == (
        Code.FAILED_PRECONDITION,
        "EVENTS_EXPIRED",
    )
    kept = await take(watch(service, activity, organizer, after_sequence=2), 2)
    assert [e.sequence for e in kept] == [3, 4]


async def test_a_sixth_stream_of_one_user_is_rate_limited(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    await joiners(service, activity, 1)
    streams = [watch(service, activity, organizer, after_sequence=0) for _ in range(5)]
    for stream in streams:
        await take(stream, 1)  # open: each has read the event
    exc = await ended(watch(service, activity, organizer, after_sequence=0))
    assert reason(exc) == (Code.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert dict(error_info(exc).metadata) == {"limit_class": "streams", "limit": "5"}
    streams.pop().cancel()
    others = await service.seed.user()
    await join(service, others, activity)

    async def reopened() -> list[pb.ActivityEvent]:
        while True:  # the cancelled stream's place frees once the server has seen it go
            with contextlib.suppress(grpc.aio.AioRpcError):
                return await take(watch(service, activity, organizer, after_sequence=1), 1)

    assert [e.user_id for e in await asyncio.wait_for(reopened(), 60)] == [str(others)]
    for stream in streams:
        stream.cancel()


async def test_a_stream_counts_once_against_the_read_budget_whatever_it_carries(database_url: str) -> None:
    settings = test_settings(database_url, rate_limit_enabled=True, rate_limits=RateLimits(read=2))
    async with serving(settings) as service:
        organizer = await service.seed.user()
        activity = await service.seed.activity(organizer)
        await joiners(service, activity, 3)
        stream = watch(service, activity, organizer, after_sequence=0)
        assert len(await take(stream, 3)) == 3  # three messages, one read
        await service.call(
            "ListParticipants", organizer, pb.ListParticipantsRequest(activity_id=str(activity))
        )  # the second
        exc = await ended(watch(service, activity, organizer, after_sequence=0))
        assert reason(exc) == (Code.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert dict(error_info(exc).metadata) == {"limit_class": "read", "limit": "2"}
        stream.cancel()


async def test_a_stream_without_a_token_is_refused(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    stream = service.stub.WatchActivity(pb.WatchActivityRequest(activity_id=str(activity)))
    assert reason(await ended(stream)) == (Code.UNAUTHENTICATED, "TOKEN_MISSING")


async def test_streams_end_with_shutting_down_when_the_server_stops(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    stream = watch(service, activity, organizer, after_sequence=0)
    await joiners(service, activity, 1)
    await take(stream, 1)
    stopping = asyncio.ensure_future(service.app.stop())
    assert reason(await ended(stream)) == (Code.UNAVAILABLE, "SHUTTING_DOWN")
    await stopping
