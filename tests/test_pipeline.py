"""The call pipeline for every handler kind: a server-streaming method registered here (the
proto has none yet) gets authentication, limits counted once, error mapping and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc.errors import ServiceError
from participation_grpc.health import SERVICE_NAME
from participation_grpc.settings import RateLimits
from tests.conftest import Service, error_info, expect_error, serving, test_settings

Code = grpc.StatusCode
Request, Reply = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
STREAM = "/participation.v1.ParticipationService/TestStream"
FOREVER = "forever"  # the request's `service` field tells the stream what to do
FAIL_AFTER_TWO = "fail"
# grpc_health has no py.typed marker, so its messages are Any to mypy, and so are the stream's.
Stream: TypeAlias = "grpc.aio.UnaryStreamCall[Any, Any]"  # a string: not generic at run time


async def _stream(
    request: health_pb2.HealthCheckRequest, context: object
) -> AsyncIterator[health_pb2.HealthCheckResponse]:
    for _ in range(3):
        yield Reply(status=Reply.SERVING)
        if request.service == FAIL_AFTER_TWO:
            raise ServiceError(Code.PERMISSION_DENIED, "NOT_AUTHORIZED", "Authority lost")
    if request.service == FOREVER:
        await asyncio.Event().wait()


class _TestStreams(grpc.GenericRpcHandler):
    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method != STREAM:
            return None
        return grpc.unary_stream_rpc_method_handler(
            _stream, request_deserializer=Request.FromString, response_serializer=Reply.SerializeToString
        )


@contextlib.asynccontextmanager
async def streaming_service(database_url: str, **overrides: object) -> AsyncIterator[Service]:
    async with serving(test_settings(database_url, **overrides)) as service:
        service.app.pipeline.add_generic_rpc_handlers([_TestStreams()])
        yield service


def open_stream(
    service: Service, what: str = "", user: uuid.UUID | None = None, raw: bytes | None = None
) -> Stream:
    metadata = service.auth(user) if user is not None else ()
    if raw is not None:
        undecodable: grpc.aio.UnaryStreamMultiCallable[bytes, Any] = service.channel.unary_stream(
            STREAM, request_serializer=None, response_deserializer=Reply.FromString
        )
        return undecodable(raw, metadata=metadata)
    call: grpc.aio.UnaryStreamMultiCallable[Any, Any] = service.channel.unary_stream(
        STREAM, request_serializer=Request.SerializeToString, response_deserializer=Reply.FromString
    )
    return call(Request(service=what), metadata=metadata)


async def replies(stream: Stream) -> list[object]:
    return [reply async for reply in stream]


async def next_reply(stream: Stream) -> Any:
    """The stream's next message; the stream must not have ended."""
    reply = await stream.read()
    assert reply is not grpc.aio.EOF, "the stream ended"
    return reply


async def test_a_stream_needs_a_token_like_any_call(database_url: str) -> None:
    async with streaming_service(database_url) as service:
        await expect_error(replies(open_stream(service)), Code.UNAUTHENTICATED, "TOKEN_MISSING")
        assert len(await replies(open_stream(service, user=uuid.uuid4()))) == 3


async def test_an_error_raised_mid_stream_ends_it_with_its_status(database_url: str) -> None:
    async with streaming_service(database_url) as service:
        stream = open_stream(service, FAIL_AFTER_TWO, uuid.uuid4())
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for reply in stream:
                received.append(reply)
        assert len(received) == 1
        assert caught.value.code() == Code.PERMISSION_DENIED
        assert error_info(caught.value).reason == "NOT_AUTHORIZED"


async def test_a_stream_is_counted_once_against_the_rate_limit(database_url: str) -> None:
    # TestStream has no class of its own, so it draws from the write budget (limit 4 here).
    async with streaming_service(
        database_url, rate_limit_enabled=True, rate_limits=RateLimits(write=4)
    ) as service:
        user = uuid.uuid4()
        for _ in range(4):  # three messages each: counted once per stream, not per message
            assert len(await replies(open_stream(service, user=user))) == 3
        await expect_error(replies(open_stream(service, user=user)), Code.RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def test_an_undecodable_stream_request_is_invalid_argument_without_a_token(database_url: str) -> None:
    async with streaming_service(database_url) as service:
        info = await expect_error(
            replies(open_stream(service, raw=b"\xff\xff\xff")), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"
        )
        assert info.domain == "participation"


async def test_open_streams_count_against_the_concurrency_limit(database_url: str) -> None:
    async with streaming_service(database_url, grpc_max_concurrent_rpcs=2) as service:
        held = [open_stream(service, FOREVER, uuid.uuid4()) for _ in range(2)]
        for stream in held:
            await stream.read()  # open and admitted
        info = await expect_error(
            replies(open_stream(service, FOREVER, uuid.uuid4())), Code.RESOURCE_EXHAUSTED, "OVERLOADED"
        )
        assert info.metadata["limit"] == "2"
        held[0].cancel()
        # The cancelled stream gave its place back (counted, not timed: the server may take a
        # moment to hear of the cancel, so ask until it has).
        for _ in range(200):
            third = open_stream(service, FOREVER, uuid.uuid4())
            try:
                await third.read()
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == Code.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.01)
        else:
            raise AssertionError("the cancelled stream never gave its place back")
        third.cancel()
        held[1].cancel()


async def test_shutdown_ends_streams_with_shutting_down(database_url: str) -> None:
    """A stream never finishes on its own: the drain ends it, and health Watch streams (which
    saw NOT_SERVING first), with UNAVAILABLE SHUTTING_DOWN rather than a cancel."""
    async with contextlib.AsyncExitStack() as stack:
        service = await stack.enter_async_context(streaming_service(database_url))
        channel = grpc.aio.insecure_channel(service.address)
        stack.push_async_callback(channel.close)
        stream = open_stream(service, FOREVER, uuid.uuid4())
        assert (await next_reply(stream)).status == Reply.SERVING
        watch = health_pb2_grpc.HealthStub(channel).Watch(Request(service=SERVICE_NAME))
        assert (await watch.read()).status == Reply.SERVING

        stopping = asyncio.create_task(service.app.stop())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                await stream.read()
        assert caught.value.code() == Code.UNAVAILABLE
        assert error_info(caught.value).reason == "SHUTTING_DOWN"
        seen = []
        with pytest.raises(grpc.aio.AioRpcError) as watch_end:
            while True:
                seen.append((await watch.read()).status)
        assert seen == [Reply.NOT_SERVING]
        assert watch_end.value.code() == Code.UNAVAILABLE
        assert error_info(watch_end.value).reason == "SHUTTING_DOWN"
        await stopping
