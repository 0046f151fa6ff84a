"""Access lines and request ids: one line per call (refused ones too), x-request-id taken or made
and returned in the initial metadata, errors logged once, JSON lines from `serve`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc import logs
from participation_grpc.app import running
from participation_grpc.auth import mint_token
from participation_grpc.health import SERVICE_NAME
from participation_grpc.settings import RateLimits, Settings
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc
from tests.conftest import Service, expect_error, serving, test_settings
from tests.network import free_port
from tests.seed import user_and_activity

Code = grpc.StatusCode
BIN = Path(sys.executable).parent
ACCESS = "participation_grpc.access"
JOIN = f"{SERVICE_NAME}/JoinActivity"
# Only in the stubs (.pyi): what ParticipationServiceStub(channel) is for an aio channel.
Stub: TypeAlias = "participation_pb2_grpc.ParticipationServiceAsyncStub"


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, ACCESS)
    caplog.handler.addFilter(logs.add_request_id)  # as logs.configure does for the real handler
    return caplog


def extra(record: logging.LogRecord, name: str) -> Any:
    """An attribute the service's logging adds to its records (`fields`, `request_id`), which
    LogRecord's type cannot declare."""
    return vars(record)[name]


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [extra(r, "fields") for r in caplog.records if r.name == ACCESS]


def request_id_of(metadata: Any) -> str:
    found = [value for key, value in metadata or () if key == "x-request-id"]
    assert len(found) == 1, metadata
    return str(found[0])


async def test_the_callers_request_id_is_returned_and_on_the_access_line(
    service: Service, access: pytest.LogCaptureFixture
) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    call = service.stub.JoinActivity(
        pb.JoinActivityRequest(activity_id=str(activity)),
        metadata=(*service.auth(user), ("x-request-id", "tour-1")),
    )
    await call
    assert request_id_of(await call.initial_metadata()) == "tour-1"
    [line] = [line for line in lines(access) if line["request_id"] == "tour-1"]
    assert line["method"] == JOIN and line["code"] == "OK" and line["reason"] == ""
    assert line["user_id"] == str(user)
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0


async def test_a_request_id_is_made_when_missing_or_unusable_and_returned_on_failures_too(
    service: Service, access: pytest.LogCaptureFixture
) -> None:
    request = pb.JoinActivityRequest(activity_id=str(uuid.uuid4()))
    for sent in (None, "has space", "x" * 129):
        metadata = () if sent is None else (("x-request-id", sent),)
        call = service.stub.JoinActivity(request, metadata=metadata)
        await expect_error(call, Code.UNAUTHENTICATED, "TOKEN_MISSING")
        made = request_id_of(await call.initial_metadata())
        assert len(made) == 32 and int(made, 16) >= 0  # a fresh id, not the caller's value
        [line] = [line for line in lines(access) if line["request_id"] == made]
        assert (line["code"], line["reason"], line["user_id"]) == ("UNAUTHENTICATED", "TOKEN_MISSING", "")


async def test_every_refused_call_has_its_access_line(
    database_url: str, access: pytest.LogCaptureFixture
) -> None:
    settings = test_settings(database_url, rate_limit_enabled=True, rate_limits=RateLimits(write=1))
    async with serving(settings) as service:
        user = await service.seed.user()
        raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = service.channel.unary_unary(
            f"/{JOIN}"
        )  # raw bytes, no serializer
        # One after the other: the write budget (1) goes to the first.
        calls: list[tuple[Callable[[], Awaitable[object]], str]] = [
            (
                lambda: service.stub.JoinActivity(
                    pb.JoinActivityRequest(activity_id="nope"),
                    metadata=(*service.auth(user), ("x-request-id", "r1")),
                ),
                "INVALID_ARGUMENT",
            ),
            (
                lambda: service.stub.JoinActivity(
                    pb.JoinActivityRequest(activity_id=str(uuid.uuid4())),
                    metadata=(*service.auth(user), ("x-request-id", "r2")),
                ),
                "RATE_LIMITED",
            ),
            (lambda: raw(b"\xff\xff", metadata=(("x-request-id", "r3"),)), "INVALID_ARGUMENT"),
            (
                lambda: service.stub.JoinActivity(
                    pb.JoinActivityRequest(), metadata=(("authorization", "Bearer x"), ("x-request-id", "r4"))
                ),
                "TOKEN_INVALID",
            ),
        ]
        for call, _ in calls:
            with pytest.raises(grpc.aio.AioRpcError):
                await call()
    by_id = {line["request_id"]: line for line in lines(access)}
    for (_, reason), rid in zip(calls, ("r1", "r2", "r3", "r4"), strict=True):
        assert by_id[rid]["reason"] == reason, by_id[rid]
        assert by_id[rid]["method"] == JOIN


class _Failing(grpc.GenericRpcHandler):
    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        if handler_call_details.method != f"/{SERVICE_NAME}/TestFailing":
            return None

        async def fail(request: bytes, context: object) -> bytes:
            raise RuntimeError("a bug")

        return grpc.unary_unary_rpc_method_handler(fail)


async def test_an_unexpected_error_is_logged_once_with_the_request_id(
    service: Service, access: pytest.LogCaptureFixture
) -> None:
    service.app.pipeline.add_generic_rpc_handlers([_Failing()])
    failing: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = service.channel.unary_unary(
        f"/{SERVICE_NAME}/TestFailing"
    )
    call = failing(b"", metadata=(*service.auth(uuid.uuid4()), ("x-request-id", "bug-1")))
    await expect_error(call, Code.INTERNAL, "INTERNAL")
    errors = [r for r in access.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert extra(errors[0], "request_id") == "bug-1"
    assert errors[0].exc_info and "a bug" in str(errors[0].exc_info[1])
    [line] = [line for line in lines(access) if line["request_id"] == "bug-1"]
    assert (line["code"], line["reason"]) == ("INTERNAL", "INTERNAL")


async def test_a_database_outage_is_one_access_line_per_call_and_not_a_warning_each(
    access: pytest.LogCaptureFixture,
) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    async with serving_without_database(unreachable) as (stub, settings):
        auth = (("authorization", f"Bearer {mint_token(settings, uuid.uuid4())}"),)
        for _ in range(20):
            await expect_error(
                stub.JoinActivity(pb.JoinActivityRequest(activity_id=str(uuid.uuid4())), metadata=auth),
                Code.UNAVAILABLE,
                "DATABASE_UNAVAILABLE",
            )
    outage = [line for line in lines(access) if line["reason"] == "DATABASE_UNAVAILABLE"]
    assert len(outage) == 20
    warnings = [r for r in access.records if r.name != ACCESS and "database unavailable" in r.getMessage()]
    assert len(warnings) <= 1  # summarised (none here when an earlier test began the window)


@asynccontextmanager
async def serving_without_database(url: str) -> AsyncIterator[tuple[Stub, Settings]]:
    """`serving` needs a seeding connection; this one has only the service and a stub."""
    settings = test_settings(url)
    async with running(settings) as app:
        async with grpc.aio.insecure_channel(app.address) as channel:
            yield participation_pb2_grpc.ParticipationServiceStub(channel), settings


async def test_serve_writes_json_access_lines_and_serves_metrics(database_url: str) -> None:
    """The README's path: LOG_FORMAT=json, a call with x-request-id, the line, /metrics."""
    user, activity = await user_and_activity(database_url)
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(grpc_port),
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(metrics_port),
        "LOG_FORMAT": "json",
        "RATE_LIMIT_ENABLED": "false",
        "SHUTDOWN_PAUSE_SECONDS": "0",
    }
    token = mint_token(Settings.from_environ(env), user)
    server = await asyncio.create_subprocess_exec(
        str(BIN / "participation-grpc"), "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(  # until it listens
                health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=60
            )
        grpcurl = await asyncio.create_subprocess_exec(
            str(BIN / "grpcurl"),
            "-plaintext",
            "-v",
            "-H",
            f"authorization: Bearer {token}",
            "-H",
            "x-request-id: my-first-call",
            "-d",
            json.dumps({"activity_id": str(activity)}),
            f"127.0.0.1:{grpc_port}",
            JOIN,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await grpcurl.communicate()
        assert grpcurl.returncode == 0, err.decode()
        headers = out.decode().split("Response headers received:", 1)[1].split("\n\n", 1)[0]
        assert "x-request-id: my-first-call" in headers
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert (
            'grpc_server_handled_total{grpc_code="OK",grpc_method="JoinActivity",'
            f'grpc_service="{SERVICE_NAME}",grpc_type="unary"}} 1.0'
        ) in text
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(server.communicate(), 60)
    assert server.returncode == 0
    records = [json.loads(line) for line in stderr.decode().splitlines()]  # every line is JSON
    [line] = [
        r for r in records if r.get("request_id") == "my-first-call" and r.get("method") == JOIN
    ]  # grpcurl sends the header on reflection too
    assert line["logger"] == ACCESS and line["level"] == "INFO"
    assert (line["method"], line["code"], line["reason"], line["user_id"]) == (JOIN, "OK", "", str(user))
    assert line["peer"].startswith("ipv4:127.0.0.1:") and line["duration_ms"] > 0


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())
