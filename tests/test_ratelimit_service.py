"""Rate limits as callers see them: the running server, real Redis, rich error details."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from participation_grpc.app import App
from participation_grpc.auth import mint_token
from participation_grpc.ratelimit import LocalLimiter, RedisLimiter
from participation_grpc.settings import RateLimits, Settings
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc
from tests.conftest import detail, error_info, serving
from tests.conftest import test_settings as settings_for

Code = grpc.StatusCode
# Outcomes a limiter must never cause: admitted calls may fail, but only for their own reasons.
NEVER = {Code.RESOURCE_EXHAUSTED, Code.INTERNAL, Code.UNKNOWN, Code.UNAVAILABLE}


def random_id() -> str:
    return str(uuid.uuid4())


# One call of each class; ids are random, so each is admitted and then fails (or succeeds)
# on its own merits, which still counts against the budget.
CALLS: dict[str, Callable[[], tuple[str, Any]]] = {
    "write": lambda: ("JoinActivity", pb.JoinActivityRequest(activity_id=random_id())),
    "bulk": lambda: (
        "MarkAttendance",
        pb.MarkAttendanceRequest(
            activity_id=random_id(),
            entries=[pb.AttendanceEntry(user_id=random_id(), status=pb.ATTENDANCE_STATUS_ATTENDED)],
        ),
    ),
    "confirm": lambda: (
        "ConfirmAttendance",
        pb.ConfirmAttendanceRequest(activity_id=random_id(), user_id=random_id()),
    ),
    "read": lambda: ("ListUserActivities", pb.ListUserActivitiesRequest()),
}


@dataclass
class Server:
    app: App
    channel: grpc.aio.Channel
    settings: Settings

    @property
    def stub(self) -> participation_pb2_grpc.ParticipationServiceAsyncStub:
        return participation_pb2_grpc.ParticipationServiceStub(self.channel)

    def auth(self, user_id: uuid.UUID) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {mint_token(self.settings, user_id)}"),)

    async def call(self, limit_class: str, user_id: uuid.UUID, **kwargs: Any) -> Code:
        """The status code of one call of this class as user_id."""
        method, request = CALLS[limit_class]()
        kwargs.setdefault("metadata", self.auth(user_id))
        try:
            await getattr(self.stub, method)(request, **kwargs)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return Code.OK

    async def refusal(self, limit_class: str, user_id: uuid.UUID) -> grpc.aio.AioRpcError:
        method, request = CALLS[limit_class]()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(self.stub, method)(request, metadata=self.auth(user_id))
        assert caught.value.code() == Code.RESOURCE_EXHAUSTED, caught.value.details()
        return caught.value


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def servers(database_url: str, redis_url: str) -> AsyncIterator[StartServer]:
    """Starts servers with rate limiting on, against the test Redis unless told otherwise."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Server:
            options = {"rate_limit_enabled": True, "redis_url": redis_url, **overrides}
            started = await stack.enter_async_context(serving(settings_for(database_url, **options)))
            return Server(started.app, started.channel, started.settings)

        yield start


async def admit(server: Server, limit_class: str, user_id: uuid.UUID, calls: int) -> None:
    codes = [await server.call(limit_class, user_id) for _ in range(calls)]
    assert not NEVER & set(codes), codes


def retry_seconds(exc: grpc.aio.AioRpcError) -> float:
    info = detail(exc, error_details_pb2.RetryInfo)
    assert info is not None, "RESOURCE_EXHAUSTED without RetryInfo"
    seconds: float = info.retry_delay.ToTimedelta().total_seconds()
    return seconds


WINDOW_SECONDS = 60.0  # "per minute" (contract section 3)
CLOCK_SLACK_SECONDS = 0.5  # Redis's clock against this process's, and rounding


def assert_waits_out_the_window(exc: grpc.aio.AioRpcError, since: float) -> None:
    """The refusal's RetryInfo is the rest of the window opened by the oldest admitted call,
    made after `since` (time.monotonic()). Bounded by the time the calls really took rather
    than a guess (55 s once failed at 54.3 s on a loaded machine): never a whole window, never
    less than what is left of it."""
    elapsed = time.monotonic() - since
    assert WINDOW_SECONDS - elapsed - CLOCK_SLACK_SECONDS < retry_seconds(exc) <= WINDOW_SECONDS


@pytest.mark.parametrize("limit_class", ["write", "bulk", "confirm", "read"])
async def test_burst_over_a_class_limit_is_refused_with_the_wait_and_the_quota(
    servers: StartServer, limit_class: str
) -> None:
    server = await servers()
    user = uuid.uuid4()
    limit = getattr(RateLimits(), limit_class)
    since = time.monotonic()
    await admit(server, limit_class, user, limit)
    exc = await server.refusal(limit_class, user)
    assert_waits_out_the_window(exc, since)
    info = error_info(exc)
    assert (info.reason, info.domain) == ("RATE_LIMITED", "participation")
    assert dict(info.metadata) == {"limit_class": limit_class, "limit": str(limit)}
    quota = detail(exc, error_details_pb2.QuotaFailure)
    assert [v.subject for v in quota.violations] == [f"user:{user}"]


async def test_admitted_calls_count_whatever_their_outcome(servers: StartServer) -> None:
    server = await servers(rate_limits=RateLimits(write=3))
    user = uuid.uuid4()
    for _ in range(3):
        reply = server.stub.JoinActivity(
            pb.JoinActivityRequest(activity_id="not-a-uuid"), metadata=server.auth(user)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reply
        assert caught.value.code() == Code.INVALID_ARGUMENT
    await server.refusal("write", user)


async def test_bad_tokens_are_refused_before_the_limiter_and_spend_nothing(servers: StartServer) -> None:
    server = await servers(rate_limits=RateLimits(write=2))
    user = uuid.uuid4()
    forged = (("authorization", "Bearer not.a.token"),)
    for metadata in [forged] * 5 + [()] * 5:
        assert await server.call("write", user, metadata=metadata) == Code.UNAUTHENTICATED
    await admit(server, "write", user, 2)
    await server.refusal("write", user)


async def test_budgets_are_per_user_and_per_class(servers: StartServer) -> None:
    server = await servers(rate_limits=RateLimits(write=2, read=2))
    user = uuid.uuid4()
    await admit(server, "write", user, 2)
    await server.refusal("write", user)
    await admit(server, "read", user, 2)
    await admit(server, "write", uuid.uuid4(), 2)


async def test_two_servers_on_one_redis_share_one_budget(servers: StartServer) -> None:
    limits = RateLimits(write=4)
    first, second = await servers(rate_limits=limits), await servers(rate_limits=limits)
    user = uuid.uuid4()
    since = time.monotonic()
    for server in (first, second, first, second):
        await admit(server, "write", user, 1)
    for server in (first, second):
        exc = await server.refusal("write", user)
        assert_waits_out_the_window(exc, since)
    assert isinstance(first.app.limiter, RedisLimiter) and first.app.limiter.using_redis


async def test_without_redis_url_the_in_process_limiter_applies(servers: StartServer) -> None:
    server = await servers(redis_url=None, rate_limits=RateLimits(read=3))
    assert isinstance(server.app.limiter, LocalLimiter)
    user = uuid.uuid4()
    since = time.monotonic()
    await admit(server, "read", user, 3)
    exc = await server.refusal("read", user)
    assert error_info(exc).reason == "RATE_LIMITED"
    assert_waits_out_the_window(exc, since)


async def test_disabled_rate_limiting_lets_bursts_through(servers: StartServer) -> None:
    server = await servers(rate_limit_enabled=False)
    assert server.app.limiter is None
    await admit(server, "write", uuid.uuid4(), 15)
