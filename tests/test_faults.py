"""A PostgreSQL of the test's own restarted, stopped and frozen under concurrent joins: every
reply is OK or UNAVAILABLE with a reason, the database agrees with each one, health follows
the database within the contract's 5 s, and the service recovers by itself."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc.db import Database, Limits
from participation_grpc.errors import ServiceError
from participation_grpc.migrate import migrate
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, error_info, serving, test_settings
from tests.network import SilentAfterStartup
from tests.private_postgres import PrivatePostgres

Code = grpc.StatusCode
Outcome = tuple[grpc.StatusCode, str]
OK: Outcome = (Code.OK, "")
BUSY: Outcome = (Code.UNAVAILABLE, "DATABASE_BUSY")
GONE: Outcome = (Code.UNAVAILABLE, "DATABASE_UNAVAILABLE")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The contract's windows for health (5 s), with slack for a shared machine; polled, not slept.
HEALTH_WINDOW_SECONDS = 10.0
POLL_SECONDS = 0.1
GUARD_SECONDS = 60.0  # against hanging, never a measure of speed
# Short limits so a frozen database is noticed in about a second.
FAST = {
    "db_lock_timeout_ms": 500,
    "db_statement_timeout_ms": 1000,
    "db_acquire_timeout_ms": 1000,
    "db_pool_max_size": 8,
}


@pytest.fixture(scope="module")
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    server = await asyncio.to_thread(PrivatePostgres)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.remove)


@pytest.fixture(scope="module")
async def fault_database(private_pg: PrivatePostgres) -> str:
    conn = await asyncpg.connect(private_pg.uri())
    await conn.execute("CREATE DATABASE faults")
    await conn.close()
    url = private_pg.uri("faults")
    await migrate(url)
    return url


@pytest.fixture
async def service(fault_database: str, private_pg: PrivatePostgres) -> AsyncIterator[Service]:
    async with serving(test_settings(fault_database, **FAST)) as started:
        yield started
    # Whatever a failed test left behind, the next one meets a running server.
    await asyncio.to_thread(private_pg.thaw)


async def outcome(call: Awaitable[object]) -> Outcome:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        try:
            return exc.code(), error_info(exc).reason
        except AssertionError:  # no rich status at all: reported as such
            return exc.code(), f"(no ErrorInfo) {exc.details()}"
    return OK


@dataclass
class Storm:
    """Concurrent joins of distinct users onto one activity; every reply kept."""

    service: Service
    activity: uuid.UUID
    users: list[uuid.UUID]
    concurrency: int = 12
    replies: dict[uuid.UUID, Outcome] = field(default_factory=dict)

    async def run(self) -> dict[uuid.UUID, Outcome]:
        queue = list(reversed(self.users))

        async def worker() -> None:
            while queue:
                user = queue.pop()
                request = pb.JoinActivityRequest(activity_id=str(self.activity))
                self.replies[user] = await outcome(
                    self.service.stub.JoinActivity(request, metadata=self.service.auth(user), timeout=60)
                )

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return self.replies


async def until(condition: Callable[[], bool | Awaitable[bool]], seconds: float, what: str) -> None:
    """Polls a condition (never a fixed sleep); fails after `seconds`."""
    for _ in range(int(seconds / POLL_SECONDS)):
        met = condition()
        if met if isinstance(met, bool) else await met:
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"{what} did not happen within {seconds} s")


async def health_is(service: Service, status: int) -> bool:
    reply = await health_pb2_grpc.HealthStub(service.channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=10
    )
    return bool(reply.status == status)


async def setup(service: Service, users: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=10_000)
    return activity, [await service.seed.user() for _ in range(users)]


async def database_agrees(
    url: str, activity: uuid.UUID, replies: dict[uuid.UUID, Outcome]
) -> dict[Outcome, int]:
    """Every OK join left its row, every DATABASE_BUSY none (DATABASE_UNAVAILABLE during a
    statement may have committed or not: the database went away mid-call); the counters are
    exact. Returns how many replies of each kind there were."""
    conn = await asyncpg.connect(url)
    try:
        rows = {
            r["user_id"]
            for r in await conn.fetch(
                "SELECT user_id FROM activity.participants WHERE activity_id = $1 "
                "AND participation_status = 'registered'",
                activity,
            )
        }
        counter = await conn.fetchval(
            "SELECT current_participants_count FROM activity.activities WHERE activity_id = $1", activity
        )
    finally:
        await conn.close()
    kinds: dict[Outcome, int] = {}
    for user, reply in replies.items():
        kinds[reply] = kinds.get(reply, 0) + 1
        assert reply in (OK, BUSY, GONE), (user, reply)
        if reply == OK:
            assert user in rows, f"{user} was answered OK but has no row"
        if reply == BUSY:
            assert user not in rows, f"{user} was answered DATABASE_BUSY but was written"
    assert counter == len(rows)  # the organizer's seat plus every join that committed
    return kinds


async def reseed(service: Service) -> None:
    """The seeding connection, cut by a restart, opened again (closed with the service)."""
    await service.seed.conn.close()
    service.seed.conn = await asyncpg.connect(service.settings.database_url)


async def recovers(service: Service, activity: uuid.UUID) -> None:
    """SERVING again, and then every call of a fresh batch is OK."""
    await until(lambda: health_is(service, SERVING), HEALTH_WINDOW_SECONDS, "SERVING again")
    fresh = [await service.seed.user() for _ in range(10)]
    replies = await Storm(service, activity, fresh).run()
    assert set(replies.values()) == {OK}, replies


async def test_restart_under_load_answers_ok_or_unavailable_and_recovers(
    service: Service, private_pg: PrivatePostgres
) -> None:
    activity, users = await setup(service, 240)
    storm = Storm(service, activity, users)
    running = asyncio.create_task(storm.run())
    await until(lambda: len(storm.replies) >= 40, 60, "40 joins answered")
    await asyncio.to_thread(private_pg.restart)
    replies = await asyncio.wait_for(running, 120)
    kinds = await database_agrees(service.settings.database_url or "", activity, replies)
    assert kinds.get(OK, 0) >= 40
    await reseed(service)
    await recovers(service, activity)


async def test_stopped_database_is_unavailable_not_serving_logged_once_and_recovers(
    service: Service, private_pg: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    activity, users = await setup(service, 150)
    with caplog.at_level(logging.INFO, "participation_grpc"):
        await asyncio.to_thread(private_pg.stop)
        await until(
            lambda: health_is(service, NOT_SERVING), HEALTH_WINDOW_SECONDS, "NOT_SERVING after the stop"
        )
        replies = await asyncio.wait_for(Storm(service, activity, users).run(), 120)
    assert set(replies.values()) == {GONE}  # refused at once, never waiting for a deadline
    # 150 failed calls, one line about them (and none per call), plus health's transition.
    lines = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    await asyncio.to_thread(private_pg.restart)
    await reseed(service)
    await recovers(service, activity)
    assert await database_agrees(service.settings.database_url or "", activity, replies)


async def test_frozen_database_turns_health_not_serving_and_calls_unavailable(
    service: Service, private_pg: PrivatePostgres
) -> None:
    """SIGSTOP: the server neither answers nor refuses. Calls are answered UNAVAILABLE within
    the configured limits (never waiting for their deadline), health says NOT_SERVING, and
    after SIGCONT everything is as before."""
    activity, users = await setup(service, 120)
    # Users for joins made only once health says NOT_SERVING, seeded while the database
    # answers. A batch of their own: however many joins the first storm had answered by then
    # (all of its users, on a fast or a stalled run), every one of these is made while frozen.
    frozen_users = [await service.seed.user() for _ in range(24)]
    storm = Storm(service, activity, users)
    running = asyncio.create_task(storm.run())
    await until(lambda: len(storm.replies) >= 20, 60, "20 joins answered")
    await asyncio.to_thread(private_pg.freeze)
    try:
        await until(
            lambda: health_is(service, NOT_SERVING), HEALTH_WINDOW_SECONDS, "NOT_SERVING while frozen"
        )
        # Calls go on being answered while the database is frozen (BUSY or UNAVAILABLE).
        frozen = Storm(service, activity, frozen_users)
        try:
            await asyncio.wait_for(frozen.run(), GUARD_SECONDS)
        except TimeoutError:
            raise AssertionError(
                f"calls made while frozen: {len(frozen.replies)} of "
                f"{len(frozen_users)} answered within {GUARD_SECONDS} s"
            ) from None
    finally:
        await asyncio.to_thread(private_pg.thaw)
    assert set(frozen.replies.values()) <= {BUSY, GONE}, frozen.replies
    replies = await asyncio.wait_for(running, 120)
    assert {r for r in replies.values() if r != OK} <= {BUSY, GONE}
    await database_agrees(service.settings.database_url or "", activity, {**replies, **frozen.replies})
    await recovers(service, activity)


async def test_a_connection_cut_off_as_it_opens_is_answered_unavailable_holding_nothing(
    database_url: str,
) -> None:
    """The path to the database goes silent just after a pool connection opened, before the
    pool's type setup on it ran (asyncpg's own queries, with no timeout of their own): each
    call is still answered DATABASE_UNAVAILABLE within the acquire limit, not whenever the
    server comes back, and gives its pool places back."""
    proxy = SilentAfterStartup(database_url)
    dsn = await proxy.start()
    limits = Limits(
        FAST["db_lock_timeout_ms"], FAST["db_statement_timeout_ms"], FAST["db_acquire_timeout_ms"], per_key=1
    )
    db = await Database.connect(dsn, min_size=0, max_size=2, limits=limits)
    try:
        for _ in range(3):  # more calls than places: a place held for good would show
            with pytest.raises(ServiceError) as refused:
                await asyncio.wait_for(db.fetchrow("SELECT 1"), GUARD_SECONDS)
            assert refused.value.reason == "DATABASE_UNAVAILABLE"
        assert proxy.opened == 3 and proxy.dropped > 0  # each call got past the connect
        assert db.pool_sizes() == (0, 0, 2)
    finally:
        await db.close()
        await proxy.close()
