"""The limiter itself: the sliding log in Redis and in process, fallback and recovery."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from participation_grpc import metrics
from participation_grpc.ratelimit import (
    METHOD_CLASSES,
    LocalLimiter,
    RedisLimiter,
    build_limiter,
    limit_class,
)
from participation_grpc.settings import ConfigError, RateLimits, Settings
from participation_grpc.v1 import participation_pb2
from tests import redis_server
from tests.network import free_port

LIMITS = RateLimits(write=3, bulk=2, confirm=4, read=5)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so no two tests (or runs) share a budget."""
    return f"test:ratelimit:{uuid.uuid4().hex}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def user() -> str:
    return str(uuid.uuid4())


async def admitted(limiter: Any, subject: str, limit_class: str, calls: int) -> int:
    return sum([(await limiter.acquire(subject, limit_class)).allowed for _ in range(calls)])


# --- classes -------------------------------------------------------------------------------


def test_every_rpc_draws_from_a_named_class() -> None:
    service = participation_pb2.DESCRIPTOR.services_by_name["ParticipationService"]
    assert {m.name for m in service.methods} == set(METHOD_CLASSES)
    assert len(METHOD_CLASSES) == 18


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("JoinActivity", "write"),
        ("CancelInvitation", "write"),
        ("DemoteParticipant", "write"),
        ("MarkAttendance", "bulk"),
        ("SendInvitations", "bulk"),
        ("ConfirmAttendance", "confirm"),
        ("ListWaitlist", "read"),
        ("ListPendingVerifications", "read"),
    ],
)
def test_method_classes_follow_the_contract(method: str, expected: str) -> None:
    assert limit_class(method) == expected


def test_defaults_are_the_contract_limits() -> None:
    assert Settings().rate_limits == RateLimits(write=10, bulk=5, confirm=20, read=60)


def test_limits_and_redis_url_come_from_the_environment() -> None:
    settings = Settings.from_environ(
        {
            "REDIS_URL": "redis://cache:6379/2",
            "RATE_LIMIT_WRITE_PER_MINUTE": "7",
            "RATE_LIMIT_BULK_PER_MINUTE": "2",
            "RATE_LIMIT_CONFIRM_PER_MINUTE": "9",
            "RATE_LIMIT_READ_PER_MINUTE": "100",
            "RATE_LIMIT_ENABLED": "false",
        }
    )
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.rate_limits == RateLimits(write=7, bulk=2, confirm=9, read=100)
    assert settings.rate_limit_enabled is False


@pytest.mark.parametrize(
    "env",
    [
        {"REDIS_URL": "http://cache:6379"},
        {"RATE_LIMIT_READ_PER_MINUTE": "0"},
        {"RATE_LIMIT_WRITE_PER_MINUTE": "ten"},
    ],
)
def test_bad_limiter_settings_stop_start_up_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_environ(env)


def test_redis_url_picks_the_shared_limiter_and_no_url_the_local_one() -> None:
    assert isinstance(build_limiter(Settings()), LocalLimiter)
    assert isinstance(build_limiter(Settings(redis_url="redis://127.0.0.1:1/0")), RedisLimiter)


# --- in process ----------------------------------------------------------------------------


async def test_local_limiter_admits_the_limit_then_refuses_until_the_oldest_call_expires() -> None:
    clock = Clock()
    limiter = LocalLimiter(LIMITS, clock)
    subject = user()
    assert await admitted(limiter, subject, "write", 3) == 3
    clock.now += 10
    refused = await limiter.acquire(subject, "write")
    assert (refused.allowed, refused.limit, refused.limit_class) == (False, 3, "write")
    assert refused.retry_after == pytest.approx(50.0)
    clock.now += 50
    assert (await limiter.acquire(subject, "write")).allowed


async def test_local_refused_calls_do_not_count() -> None:
    clock = Clock()
    limiter = LocalLimiter(LIMITS, clock)
    subject = user()
    await admitted(limiter, subject, "bulk", 2)
    assert await admitted(limiter, subject, "bulk", 20) == 0
    clock.now += 60
    assert await admitted(limiter, subject, "bulk", 5) == 2


async def test_local_limiter_allows_no_double_burst_at_a_window_edge() -> None:
    """A fixed window would reset at 60 s and admit a second burst right after the first."""
    clock = Clock()
    limiter = LocalLimiter(LIMITS, clock)
    subject = user()
    clock.now += 59
    assert await admitted(limiter, subject, "write", 3) == 3
    clock.now += 2
    refused = await limiter.acquire(subject, "write")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(58.0)


async def test_local_window_slides_one_call_at_a_time() -> None:
    clock = Clock()
    limiter = LocalLimiter(LIMITS, clock)
    subject = user()
    await admitted(limiter, subject, "write", 1)
    clock.now += 30
    await admitted(limiter, subject, "write", 2)
    clock.now += 30  # the first call is now exactly one window old: it no longer counts
    assert await admitted(limiter, subject, "write", 3) == 1
    assert (await limiter.acquire(subject, "write")).retry_after == pytest.approx(30.0)


async def test_local_budgets_are_per_user_and_per_class() -> None:
    limiter = LocalLimiter(LIMITS, Clock())
    subject = user()
    assert await admitted(limiter, subject, "write", 4) == 3
    assert await admitted(limiter, subject, "read", 6) == 5
    assert await admitted(limiter, subject, "confirm", 5) == 4
    assert await admitted(limiter, user(), "write", 4) == 3


async def test_local_limiter_forgets_users_idle_for_a_window() -> None:
    clock = Clock()
    limiter = LocalLimiter(LIMITS, clock)
    for _ in range(100):
        await limiter.acquire(user(), "read")
    clock.now += 61
    await limiter.acquire(user(), "read")
    assert limiter.tracked() == 1


# --- Redis ---------------------------------------------------------------------------------


async def test_redis_burst_over_the_limit_is_refused_for_nearly_the_whole_window(
    client: Redis, prefix: str
) -> None:
    limiter = RedisLimiter(client, LIMITS, prefix=prefix)
    subject = user()
    since = time.monotonic()
    assert await admitted(limiter, subject, "read", 5) == 5
    refused = await limiter.acquire(subject, "read")
    assert (refused.allowed, refused.limit, refused.limit_class) == (False, 5, "read")
    # The rest of the window the first call opened: bounded by the time the calls took (and
    # half a second for Redis's clock against ours), not by a guess at the machine's speed.
    elapsed = time.monotonic() - since
    assert 60.0 - elapsed - 0.5 < refused.retry_after <= 60.0


async def test_redis_refused_calls_do_not_count(client: Redis, prefix: str) -> None:
    limiter = RedisLimiter(client, LIMITS, prefix=prefix)
    subject = user()
    assert await admitted(limiter, subject, "bulk", 12) == 2
    assert await client.zcard(f"{prefix}:bulk:{subject}") == 2


async def test_redis_wait_is_until_the_blocking_call_leaves_the_window(client: Redis, prefix: str) -> None:
    """Calls placed in the past on Redis's clock: one beyond the window no longer counts, and
    the wait is exactly until the oldest call still inside leaves it."""
    subject = user()
    key = f"{prefix}:write:{subject}"
    seconds, micros = await client.time()
    now = seconds * 1_000_000 + micros
    await client.zadd(
        key, {"gone": now - 61_000_000, "a": now - 59_500_000, "b": now - 30_000_000, "c": now - 1_000_000}
    )
    limiter = RedisLimiter(client, LIMITS, prefix=prefix)
    refused = await limiter.acquire(subject, "write")
    assert not refused.allowed
    assert 0.3 < refused.retry_after <= 0.5
    assert await client.zcard(key) == 3


async def test_redis_budgets_are_per_user_and_per_class(client: Redis, prefix: str) -> None:
    limiter = RedisLimiter(client, LIMITS, prefix=prefix)
    subject = user()
    assert await admitted(limiter, subject, "write", 4) == 3
    assert await admitted(limiter, subject, "confirm", 5) == 4
    assert await admitted(limiter, user(), "write", 4) == 3


async def test_redis_keys_expire_after_one_window(client: Redis, prefix: str) -> None:
    subject = user()
    await RedisLimiter(client, LIMITS, prefix=prefix).acquire(subject, "read")
    assert 0 < await client.pttl(f"{prefix}:read:{subject}") <= 60_000


async def test_concurrent_calls_through_two_clients_admit_exactly_the_limit(
    redis_url: str, prefix: str
) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    limiters = [RedisLimiter(c, LIMITS, prefix=prefix) for c in clients]
    subject = user()
    decisions = await asyncio.gather(*(limiters[i % 2].acquire(subject, "read") for i in range(60)))
    assert sum(d.allowed for d in decisions) == 5
    for c in clients:
        await c.aclose()


async def test_script_is_loaded_again_when_redis_forgot_it(prefix: str) -> None:
    server = redis_server.RedisServer()  # SCRIPT FLUSH on a server of its own
    server.start()
    try:
        client = Redis.from_url(server.url)
        limiter = RedisLimiter(client, LIMITS, prefix=prefix)
        subject = user()
        await limiter.acquire(subject, "write")
        await client.script_flush()
        assert await admitted(limiter, subject, "write", 3) == 2
        assert limiter.using_redis
        await client.aclose()
    finally:
        server.remove()


# --- fallback and recovery -----------------------------------------------------------------


class FlakyScript:
    """Stands in for the Redis script: fails while `down`, else admits everything."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def __call__(self, keys: list[str], args: list[Any]) -> list[int]:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("Connection refused")
        return [1, 0]


class FlakyPool:
    def __init__(self) -> None:
        self.disconnects = 0

    async def disconnect(self) -> None:
        self.disconnects += 1


class FlakyClient:
    """Stands in for redis.asyncio.Redis with only what RedisLimiter calls: not a Redis to mypy,
    hence the arg-type ignores where it is passed."""

    def __init__(self) -> None:
        self.script = FlakyScript()
        self.connection_pool = FlakyPool()

    def register_script(self, source: str) -> FlakyScript:
        return self.script

    async def aclose(self) -> None:
        pass


async def test_unreachable_redis_is_replaced_by_the_local_limiter_logged_and_counted_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = metrics.sample("participation_ratelimit_redis_outages_total")
    fallbacks = metrics.sample("participation_ratelimit_fallback_decisions_total")
    limiter = RedisLimiter(
        Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5),
        LIMITS,
        retry_seconds=0,
    )
    subject = user()
    with caplog.at_level(logging.WARNING, "participation_grpc.ratelimit"):
        assert await admitted(limiter, subject, "write", 6) == 3  # still limited, never open
    assert not limiter.using_redis
    assert metrics.sample("participation_ratelimit_redis_outages_total") - outages == 1
    assert metrics.sample("participation_ratelimit_fallback_decisions_total") - fallbacks == 6
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    await limiter.close()


async def test_redis_is_asked_again_only_after_the_back_off_and_then_used_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, client = Clock(), FlakyClient()
    limiter = RedisLimiter(client, LIMITS, retry_seconds=5, clock=clock)  # type: ignore[arg-type]
    subject = user()
    await limiter.acquire(subject, "read")
    await admitted(limiter, subject, "read", 3)
    assert client.script.calls == 1  # inside the back-off nobody waits on a dead Redis
    clock.now += 5
    await limiter.acquire(subject, "read")
    assert client.script.calls == 2 and not limiter.using_redis
    client.script.down = False
    clock.now += 5
    with caplog.at_level(logging.INFO, "participation_grpc.ratelimit"):
        assert (await limiter.acquire(subject, "read")).allowed
    assert limiter.using_redis
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_calls_admitted_by_redis_are_remembered_for_an_outage() -> None:
    """A user who spent the budget just before Redis died does not get a fresh one locally."""
    clock, client = Clock(), FlakyClient()
    client.script.down = False
    limiter = RedisLimiter(client, LIMITS, retry_seconds=5, clock=clock)  # type: ignore[arg-type]
    subject = user()
    assert await admitted(limiter, subject, "write", 3) == 3
    client.script.down = True
    refused = await limiter.acquire(subject, "write")
    assert not refused.allowed and not limiter.using_redis
