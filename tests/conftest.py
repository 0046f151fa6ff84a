"""Fixtures: a migrated template database cloned per test, and the real server on port 0."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from participation_grpc.app import App, running
from participation_grpc.auth import mint_token
from participation_grpc.db import QueryLogger
from participation_grpc.migrate import migrate
from participation_grpc.settings import Settings
from participation_grpc.v1 import participation_pb2_grpc
from tests import redis_server
from tests.postgres import scratch_database, server_dsn, with_database
from tests.seed import Seed


@pytest.fixture(scope="session")
async def template() -> AsyncIterator[tuple[str, str]]:
    """(server DSN, name of a migrated template database)."""
    dsn, handle = server_dsn()
    name = f"participation_template_{os.getpid()}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP DATABASE IF EXISTS {name}")
    await conn.execute(f"CREATE DATABASE {name}")
    await migrate(with_database(dsn, name))
    yield dsn, name
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()
    del handle


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis (REDIS_URL, or a private server for the run); skips when none."""
    return redis_server.redis_url()


@pytest.fixture
async def database_url(template: tuple[str, str]) -> AsyncIterator[str]:
    """A fresh, migrated database of its own for one test."""
    dsn, template_name = template
    async with scratch_database(dsn, "participation_test", template_name) as url:
        yield url


def test_settings(database_url: str, **overrides: Any) -> Settings:
    # Database waits far longer than in production: a test about correctness must not turn into
    # one about timing on a busy machine (300 calls queueing on one activity's lock can take
    # seconds there). The tests about the limits set them short themselves.
    options: dict[str, Any] = {
        "database_url": database_url,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "rate_limit_enabled": False,
        "shutdown_grace_seconds": 5.0,
        "shutdown_pause_seconds": 0.0,
        "db_lock_timeout_ms": 30_000,
        "db_acquire_timeout_ms": 30_000,
        "db_statement_timeout_ms": 60_000,
    }
    return Settings(**{**options, **overrides})


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@dataclass
class Service:
    """The running server, a stub to it, and the database behind it."""

    app: App
    stub: participation_pb2_grpc.ParticipationServiceAsyncStub
    seed: Seed
    settings: Settings
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return self.app.address

    def token(self, user_id: uuid.UUID, **claims: Any) -> str:
        return mint_token(self.settings, user_id, **claims)

    def auth(self, user_id: uuid.UUID) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(user_id)}"),)

    async def call(self, method: str, user_id: uuid.UUID, request: Any) -> Any:
        """Call an RPC as user_id."""
        return await getattr(self.stub, method)(request, metadata=self.auth(user_id))


@asynccontextmanager
async def serving(settings: Settings, query_logger: QueryLogger | None = None) -> AsyncIterator[Service]:
    """The service's own lifecycle (app.running), a channel to it and a seeding connection."""
    assert settings.database_url is not None
    async with running(settings, query_logger) as app:
        channel = grpc.aio.insecure_channel(app.address)
        seed = Seed(await asyncpg.connect(settings.database_url))
        try:
            yield Service(
                app, participation_pb2_grpc.ParticipationServiceStub(channel), seed, settings, channel
            )
        finally:
            await seed.conn.close()
            await channel.close()


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[Service]:
    async with serving(test_settings(database_url)) as started:
        yield started


def error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a failed call, sync or aio (asserting there is exactly one)."""
    status = rpc_status.from_call(exc)
    assert status is not None, f"no rich status on {exc.code()}: {exc.details()}"
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    return info


def detail(exc: grpc.RpcError, kind: Any) -> Any:
    """A detail of the given message type from a failed call's status, or None."""
    status = rpc_status.from_call(exc)
    for item in status.details if status else ():
        if item.Is(kind.DESCRIPTOR):
            message = kind()
            item.Unpack(message)
            return message
    return None


async def expect_error(call: Any, code: grpc.StatusCode, reason: str) -> error_details_pb2.ErrorInfo:
    """Await a call that must fail with this code and ErrorInfo reason; returns the ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, (caught.value.code(), caught.value.details())
    info = error_info(caught.value)
    assert info.reason == reason, (info.reason, caught.value.details())
    assert info.domain == "participation"
    return info
