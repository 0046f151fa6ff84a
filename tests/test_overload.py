"""Load and stuck locks: a lock on one activity slows only it, the concurrency and message
limits answer with a reason, SIGTERM under load answers every call, memory comes back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc.auth import mint_token
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc as pb_grpc
from tests.conftest import detail, expect_error, serving, test_settings
from tests.participation import join
from tests.seed import Seed
from tests.server_process import server_process
from tests.test_faults import BUSY, OK, Outcome, outcome, until

Code = grpc.StatusCode
SHUTTING_DOWN: Outcome = (Code.UNAVAILABLE, "SHUTTING_DOWN")


@contextlib.asynccontextmanager
async def row_lock(database_url: str, activity: uuid.UUID) -> AsyncIterator[asyncpg.Connection]:
    """An outside session holding FOR UPDATE on the activity row until the block ends."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM activity.activities WHERE activity_id = $1 FOR UPDATE", activity
            )
            yield conn
    finally:
        await conn.close()


async def lock_waiters(conn: asyncpg.Connection) -> int:
    """Service connections waiting on a lock now. The snapshot is cleared first: inside a
    transaction (the lock holder's) PostgreSQL would keep answering from its first look."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'participation-grpc' "
        "AND wait_event_type = 'Lock'"
    )
    return count


async def test_a_lock_held_on_one_activity_slows_only_that_activity(database_url: str) -> None:
    """25 joins queue on a locked activity: they hold at most a quarter of the pool, are each
    answered DATABASE_BUSY with RetryInfo and write nothing; meanwhile calls on another activity
    and health are answered as if nothing happened."""
    settings = test_settings(database_url, db_lock_timeout_ms=500, db_acquire_timeout_ms=1000)
    async with serving(settings) as service:
        organizer = await service.seed.user()
        locked = await service.seed.activity(organizer, max_participants=100)
        other = await service.seed.activity(organizer, max_participants=100)
        stuck = [await service.seed.user() for _ in range(25)]
        free = [await service.seed.user() for _ in range(20)]
        async with row_lock(database_url, locked) as locker:
            waiting = [asyncio.ensure_future(outcome(join(service, u, locked))) for u in stuck]
            await until(lambda: _nonzero(locker), 30, "joins waiting on the lock")
            unrelated = await asyncio.gather(*(outcome(join(service, u, other)) for u in free))
            health = await health_pb2_grpc.HealthStub(service.channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            replies = await asyncio.gather(*waiting)
        assert set(unrelated) == {OK}
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert set(replies) == {BUSY}
        counts = await service.seed.counts(locked)
        assert counts["registered"] == counts["counter"] == 1  # only the organizer
        # Once the lock is gone the same callers get in.
        assert (
            await join(service, stuck[0], locked)
        ).participation_status == pb.PARTICIPATION_STATUS_REGISTERED


async def _nonzero(conn: asyncpg.Connection) -> bool:
    return await lock_waiters(conn) > 0


async def test_database_busy_carries_retry_info(database_url: str) -> None:
    settings = test_settings(database_url, db_lock_timeout_ms=200)
    async with serving(settings) as service:
        organizer, user = await service.seed.user(), await service.seed.user()
        activity = await service.seed.activity(organizer)
        async with row_lock(database_url, activity):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await join(service, user, activity)
        assert caught.value.code() == Code.UNAVAILABLE
        info = detail(caught.value, error_details_pb2.RetryInfo)
        assert info is not None and info.retry_delay.ToTimedelta().total_seconds() > 0
        assert "SQL" not in (caught.value.details() or "") and "lock" not in (caught.value.details() or "")


async def test_the_concurrency_limit_refuses_with_overloaded_and_health_still_answers(
    database_url: str,
) -> None:
    settings = test_settings(database_url, grpc_max_concurrent_rpcs=3, db_lock_timeout_ms=60_000)
    async with serving(settings) as service:
        organizer = await service.seed.user()
        activity = await service.seed.activity(organizer)
        users = [await service.seed.user() for _ in range(4)]
        async with row_lock(database_url, activity) as locker:
            held = [asyncio.ensure_future(join(service, u, activity)) for u in users[:3]]
            await until(lambda: _waiters_at_least(locker, 3), 30, "three calls in flight")
            info = await expect_error(
                service.call("ListUserActivities", users[3], pb.ListUserActivitiesRequest()),
                Code.RESOURCE_EXHAUSTED,
                "OVERLOADED",
            )
            assert info.metadata["limit"] == "3"
            health = await health_pb2_grpc.HealthStub(service.channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert [r.participation_status for r in await asyncio.gather(*held)] == [
            pb.PARTICIPATION_STATUS_REGISTERED
        ] * 3
        await service.call("ListUserActivities", users[3], pb.ListUserActivitiesRequest())


async def _waiters_at_least(conn: asyncpg.Connection, count: int) -> bool:
    return await lock_waiters(conn) >= count


async def test_a_request_above_the_message_limit_is_resource_exhausted(database_url: str) -> None:
    settings = test_settings(database_url, grpc_max_message_bytes=4096)
    async with serving(settings) as service:
        organizer, user = await service.seed.user(), await service.seed.user()
        activity = await service.seed.activity(organizer)
        big = pb.CancelParticipationRequest(activity_id=str(activity), reason="x" * 10_000)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service.call("CancelParticipation", user, big)
        assert caught.value.code() == Code.RESOURCE_EXHAUSTED
        # Under the limit the same call is judged on its merits (here: not a participant).
        await expect_error(
            service.call(
                "CancelParticipation", user, pb.CancelParticipationRequest(activity_id=str(activity))
            ),
            Code.FAILED_PRECONDITION,
            "NOT_PARTICIPANT",
        )


async def test_sigterm_under_load_answers_every_call_and_none_cancelled(database_url: str) -> None:
    """16 clients join back to back; SIGTERM arrives with calls in flight. Every call is
    answered OK or UNAVAILABLE SHUTTING_DOWN (a client stops at its first SHUTTING_DOWN, as a
    client moving to another replica does), the database agrees with each, and exit is 0."""
    conn = await asyncpg.connect(database_url)
    seed = Seed(conn)
    organizer = await seed.user()
    activity = await seed.activity(organizer, max_participants=10_000)
    users = [await seed.user() for _ in range(600)]
    replies: dict[uuid.UUID, Outcome] = {}
    async with server_process(
        database_url, SHUTDOWN_PAUSE_SECONDS="0.5", SHUTDOWN_GRACE_SECONDS="20"
    ) as server:
        settings = test_settings(database_url)
        channel = grpc.aio.insecure_channel(server.address)
        stub = pb_grpc.ParticipationServiceStub(channel)
        queue = list(reversed(users))

        async def client() -> None:
            while queue:
                user = queue.pop()
                replies[user] = await outcome(
                    stub.JoinActivity(
                        pb.JoinActivityRequest(activity_id=str(activity)),
                        timeout=60,
                        metadata=(("authorization", f"Bearer {mint_token(settings, user)}"),),
                    )
                )
                if replies[user] != OK:
                    return

        clients = asyncio.gather(*(client() for _ in range(16)))
        await until(lambda: len(replies) >= 60, 60, "60 joins answered")
        server.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(clients, 60)
        assert await asyncio.wait_for(server.process.wait(), 60) == 0
        await channel.close()
    kinds = set(replies.values())
    assert kinds <= {OK, SHUTTING_DOWN}, kinds
    assert SHUTTING_DOWN in kinds  # the signal came while clients were still calling
    rows = {
        r["user_id"]
        for r in await conn.fetch(
            "SELECT user_id FROM activity.participants WHERE activity_id = $1", activity
        )
    }
    for user, reply in replies.items():
        assert (user in rows) == (reply == OK), (user, reply)
    await conn.close()


async def test_memory_after_a_burst_of_large_requests_goes_back(database_url: str) -> None:
    """150 concurrent requests of almost 1 MiB (refused by validation) and 50 above the limit:
    the server's resident memory afterwards is within 150 MB of where it started (it kept
    1.47 GB before the allocator was told to give large blocks back)."""
    async with server_process(database_url) as server:
        settings = test_settings(database_url)
        token = (("authorization", f"Bearer {mint_token(settings, uuid.uuid4())}"),)
        async with grpc.aio.insecure_channel(
            server.address, options=[("grpc.max_send_message_length", 8 << 20)]
        ) as channel:
            stub = pb_grpc.ParticipationServiceStub(channel)
            await stub.ListUserActivities(pb.ListUserActivitiesRequest(), metadata=token)
            before = server.rss_bytes()
            for size in (1_000_000, 2_000_000):
                request = pb.CancelParticipationRequest(activity_id=str(uuid.uuid4()), reason="x" * size)
                codes = await asyncio.gather(
                    *(
                        outcome(stub.CancelParticipation(request, metadata=token, timeout=120))
                        for _ in range(150 if size < 1 << 20 else 50)
                    )
                )
                expected = Code.INVALID_ARGUMENT if size < 1 << 20 else Code.RESOURCE_EXHAUSTED
                assert {code for code, _ in codes} == {expected}
            after = server.rss_bytes()
        server.process.send_signal(signal.SIGTERM)
        assert await server.process.wait() == 0
    assert after - before < 150 * 1024 * 1024, (before, after)
