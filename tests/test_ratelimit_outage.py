"""Redis killed under traffic and started again: callers never notice, limits never lapse."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc import metrics
from participation_grpc.health import SERVICE_NAME
from participation_grpc.ratelimit import KEY_PREFIX, RedisLimiter
from participation_grpc.settings import RateLimits
from tests.conftest import error_info, serving
from tests.conftest import test_settings as settings_for
from tests.redis_server import RedisServer
from tests.test_ratelimit_service import Server, admit, retry_seconds

Code = grpc.StatusCode
LIMITS = RateLimits(read=6)
OUTAGES = "participation_ratelimit_redis_outages_total"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def replicas(database_url: str, private_redis: RedisServer) -> AsyncIterator[tuple[Server, Server]]:
    """Two servers sharing the private Redis; an unreachable Redis is asked again at once, so
    the test drives recovery by its calls, not by waiting."""
    settings = settings_for(
        database_url,
        rate_limit_enabled=True,
        rate_limits=LIMITS,
        redis_url=private_redis.url,
        redis_retry_seconds=0.0,
    )
    async with serving(settings) as first, serving(settings) as second:
        yield (Server(first.app, first.channel, settings), Server(second.app, second.channel, settings))


def using_redis(server: Server) -> bool:
    assert isinstance(server.app.limiter, RedisLimiter)
    return server.app.limiter.using_redis


async def health(server: Server, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(server.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    status: int = reply.status
    return status


async def test_redis_outage_falls_back_to_local_limits_and_recovers_the_shared_budget(
    replicas: tuple[Server, Server], private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = replicas
    user = uuid.uuid4()
    for server in (first, second, first, second):
        await admit(server, "read", user, 1)
    outages = metrics.sample(OUTAGES)

    private_redis.kill()
    with caplog.at_level(logging.WARNING, "participation_grpc.ratelimit"):
        # Each replica remembers the two calls Redis admitted through it: four more each.
        await admit(first, "read", user, 4)
        await admit(second, "read", user, 4)
        exc = await first.refusal("read", user)  # limited per replica, never unlimited
        assert error_info(exc).reason == "RATE_LIMITED" and retry_seconds(exc) > 0
        await admit(first, "write", user, 3)
        await admit(first, "read", uuid.uuid4(), 6)
    assert not using_redis(first) and not using_redis(second)
    for service in ("", SERVICE_NAME):
        assert await health(first, service) == health_pb2.HealthCheckResponse.SERVING
    assert metrics.sample(OUTAGES) - outages == 2  # one per replica
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 2

    private_redis.start()  # same port, empty, without the script loaded
    fresh = uuid.uuid4()
    for server in (first, second) * 3:
        await admit(server, "read", fresh, 1)
    assert using_redis(first) and using_redis(second)
    # Neither replica alone has seen more than three calls: only the shared budget refuses.
    await first.refusal("read", fresh)
    await second.refusal("read", fresh)
    client = redis.Redis.from_url(private_redis.url)
    assert client.zcard(f"{KEY_PREFIX}:read:{fresh}") == 6
    client.close()


async def test_a_redis_restart_is_no_outage_and_logs_nothing(
    replicas: tuple[Server, Server], private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every pooled connection Redis had closed failed one later call, each counted and
    logged as an outage of its own (about 12 flips in 6 s). Now a closed connection is retried
    once on a fresh one, so a restart that is over before the next call is not an outage."""
    first, _ = replicas
    await asyncio.gather(*(first.call("read", uuid.uuid4()) for _ in range(20)))  # 20 in the pool
    outages = metrics.sample(OUTAGES)
    private_redis.kill()
    private_redis.start()
    with caplog.at_level(logging.WARNING, "participation_grpc.ratelimit"):
        for _ in range(3):
            codes = await asyncio.gather(*(first.call("read", uuid.uuid4()) for _ in range(20)))
            assert set(codes) <= {Code.OK, Code.NOT_FOUND}, codes
    assert metrics.sample(OUTAGES) == outages
    assert using_redis(first)
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
