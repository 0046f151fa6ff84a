"""Hostile input against every RPC: property-based requests (malformed ids, huge strings,
out-of-range enums and sizes, garbage tokens and page tokens) and bodies that are not protobuf
at all. Whatever comes in, no UNKNOWN, no INTERNAL and no internal text goes out."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from participation_grpc.app import running
from participation_grpc.auth import mint_token
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, error_info, test_settings
from tests.seed import Seed

Code = grpc.StatusCode
SERVICE = pb.DESCRIPTOR.services_by_name["ParticipationService"]
METHODS = list(SERVICE.methods)
# Words that would mean a leak of the implementation into a caller's message.
INTERNAL_WORDS = (
    "Traceback",
    "sp_",
    "pa_",
    "SQLSTATE",
    "asyncpg",
    "Exception",
    "Error:",
    "<class",
    'File "',
    "KeyError",
    "DecodeError",
    "relation ",
    "column ",
)
# grpc's own refusals of a call too large to take in (README: load limits).
TRANSPORT_LIMITS = ("received metadata size exceeds", "Received message larger than max")
GARBAGE_BODIES = [
    b"\xff",
    b"\xff\xff\xff\xff",
    b"\x0a\x05ab",
    b"\x08",
    b"\x12\xff\xff\xff\xff\x0f",
    b"\x80" * 20,
    b"\x0b",
    b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
]
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def assert_clean(exc: grpc.RpcError, what: object) -> None:
    """A refusal a caller can use: a code other than UNKNOWN/INTERNAL, no internal words, and
    (when the service answered, not grpc's transport) an ErrorInfo of our domain."""
    code = exc.code()
    details = exc.details() or ""
    assert code not in (Code.UNKNOWN, Code.INTERNAL), (what, code, details)
    assert not any(word in details for word in INTERNAL_WORDS), (what, details)
    if code == Code.RESOURCE_EXHAUSTED and details.startswith(TRANSPORT_LIMITS):
        return  # refused by grpc itself before any handler: no room for an ErrorInfo there
    info = error_info(exc)
    assert info.domain == "participation" and info.reason, (what, info)


class ServerThread:
    """The service on an event loop of its own thread, so hypothesis (which runs examples
    synchronously) can call it through a blocking channel."""

    def __init__(self, database_url: str) -> None:
        self.settings = test_settings(database_url)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.address = ""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running(self.settings) as app:
            self.address = app.address
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(60), "the server thread did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


@pytest.fixture(scope="module")
async def fuzz_database(template: tuple[str, str]) -> AsyncIterator[tuple[str, list[str]]]:
    """A database with a few real users and activities, so that some fuzzed ids hit rows."""
    from tests.postgres import scratch_database

    dsn, template_name = template
    async with scratch_database(dsn, "participation_fuzz", template_name) as url:
        conn = await asyncpg.connect(url)
        seed = Seed(conn)
        organizer, member = await seed.user(), await seed.user()
        activity = await seed.activity(organizer)
        await seed.participant(activity, member)
        invitation = await seed.invitation(
            await seed.activity(organizer, privacy="invite_only"), member, organizer
        )
        await conn.close()
        yield url, [str(organizer), str(member), str(activity), str(invitation)]


@pytest.fixture(scope="module")
def server(fuzz_database: tuple[str, list[str]]) -> Iterator[tuple[ServerThread, list[str]]]:
    url, known = fuzz_database
    with ServerThread(url) as started:
        yield started, known


def _strings(known: list[str]) -> st.SearchStrategy[str]:
    ids = st.sampled_from(known)
    return st.one_of(
        ids,
        st.uuids().map(str),
        st.just(""),
        ids.map(lambda u: "{" + u + "}"),
        ids.map(str.upper),
        ids.map(lambda u: u.replace("-", "")),
        ids.map(lambda u: "urn:uuid:" + u),
        ids.map(lambda u: u + "\x00"),
        ids.map(lambda u: " " + u),
        st.just("'; DROP TABLE activity.users; --"),
        st.just("0" * 36),
        st.just("\x00"),
        st.integers(1_000, 300_000).map(lambda n: "x" * n),
        st.sampled_from(["é" * 100_000, "\U0001f600" * 50_000, "\ud7ff" * 10]),
        st.text(max_size=60),
    )


def _page_tokens(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.text(max_size=80),
        st.binary(max_size=60).map(lambda b: b.hex()),
        st.just("eyJhIjp7fSwiYiI6IiJ9.AAAAAAAAAAAAAAAAAAAAAA"),
        st.just("a.b.c"),
        st.just("."),
        st.integers(1, 200_000).map(lambda n: "A" * n + ".x"),
    )


def _value(field: descriptor.FieldDescriptor, known: list[str], depth: int = 0) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return _message(field.message_type, known, depth + 1)
    if field.enum_type is not None:
        return st.one_of(
            st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-(2**31), 2**31 - 1)
        )
    if field.type == descriptor.FieldDescriptor.TYPE_STRING:
        return _page_tokens(known) if field.name == "page_token" else _strings(known)
    if field.type == descriptor.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (descriptor.FieldDescriptor.TYPE_INT64, descriptor.FieldDescriptor.TYPE_SINT64):
        return st.integers(-(2**63), 2**63 - 1)
    if field.type in (descriptor.FieldDescriptor.TYPE_UINT32, descriptor.FieldDescriptor.TYPE_UINT64):
        return st.integers(0, 2**32 - 1)
    return st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-2, 200))


def _message(
    message: descriptor.Descriptor, known: list[str], depth: int = 0
) -> st.SearchStrategy[dict[str, Any]]:
    fields = {}
    for field in message.fields:
        value = _value(field, known, depth)
        if field.is_repeated:
            value = st.lists(value, max_size=120 if depth == 0 else 3)
        fields[field.name] = st.one_of(st.none(), value)
    return st.fixed_dictionaries(fields)


def _build(message: descriptor.Descriptor, values: dict[str, Any]) -> Any:
    cls = getattr(pb, message.name)
    kwargs = {}
    for field in message.fields:
        value = values[field.name]
        if value is None:
            continue
        if field.message_type is not None:
            value = (
                [_build(field.message_type, v) for v in value]
                if field.is_repeated
                else _build(field.message_type, value)
            )
        kwargs[field.name] = value
    return cls(**kwargs)


def _authorizations(server: ServerThread, known: list[str]) -> st.SearchStrategy[str | None]:
    real = mint_token(server.settings, uuid.UUID(known[1]))
    return st.one_of(
        st.none(),
        st.just("Bearer "),
        st.just(real),
        # Printable ASCII only: grpc's client itself refuses to send other header values.
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=100).map(
            lambda t: "Bearer " + t
        ),
        st.just("Bearer " + real[:-3] + "abc"),
        st.just("Bearer " + ".".join(real.split(".")[:2]) + "."),
        st.just(f"bearer {real}"),
        st.integers(1, 20_000).map(lambda n: "Bearer " + "a" * n),
    )


@pytest.mark.parametrize("tokens", ["good token", "fuzzed tokens"])
@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_fuzzed_requests_never_get_unknown_internal_or_internal_text(
    server: tuple[ServerThread, list[str]], method: descriptor.MethodDescriptor, tokens: str
) -> None:
    """With a good token the fuzzed request reaches validation and the procedures; with
    fuzzed tokens authentication meets the garbage (and always comes first)."""
    started, known = server
    request_class = getattr(pb, method.input_type.name)
    response_class = getattr(pb, method.output_type.name)
    good = st.just(f"Bearer {mint_token(started.settings, uuid.UUID(known[1]))}")
    strategy = st.tuples(
        _message(method.input_type, known),
        good if tokens == "good token" else _authorizations(started, known),
    )
    with grpc.insecure_channel(started.address) as channel:
        # A stream is judged by how it opens: its first message or its status. A stream that
        # opens and waits (nothing to send yet) meets the client's deadline, which is fine.
        path = f"/{SERVICE.full_name}/{method.name}"
        unary: grpc.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
            path,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        streaming: grpc.UnaryStreamMultiCallable[Any, Any] = channel.unary_stream(
            path,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )

        def call(request: Any, metadata: Any, timeout: float) -> None:
            if not method.server_streaming:
                unary(request, metadata=metadata, timeout=timeout)
                return
            try:
                next(iter(streaming(request, metadata=metadata, timeout=2)), None)
            except grpc.RpcError as exc:
                if exc.code() != Code.DEADLINE_EXCEEDED:
                    raise

        @FUZZ
        @given(strategy)
        def check(example: tuple[dict[str, Any], str | None]) -> None:
            values, authorization = example
            request = _build(method.input_type, values)
            metadata = () if authorization is None else (("authorization", authorization),)
            try:
                call(request, metadata=metadata, timeout=60)
            except grpc.RpcError as exc:
                assert_clean(exc, (method.name, request.ByteSize(), authorization and authorization[:20]))

        check()


@pytest.mark.parametrize(
    "path", [f"/{SERVICE.full_name}/{m.name}" for m in METHODS] + ["/grpc.health.v1.Health/Check"]
)
def test_undecodable_bodies_are_invalid_argument_without_a_token(
    server: tuple[ServerThread, list[str]], path: str
) -> None:
    started, _ = server
    with grpc.insecure_channel(started.address) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)  # raw bytes
        for body in GARBAGE_BODIES:
            with pytest.raises(grpc.RpcError) as caught:
                call(body, timeout=30)
            assert caught.value.code() == Code.INVALID_ARGUMENT, (path, body)
            assert_clean(caught.value, (path, body))
            details = caught.value.details() or ""
            assert "protobuf" in details and "Unexpected" not in details, details


async def test_a_burst_of_undecodable_bodies_is_logged_once(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = service.channel.unary_unary(
        f"/{SERVICE.full_name}/JoinActivity"
    )  # raw bytes, no serializer
    with caplog.at_level(logging.DEBUG):
        for _ in range(200):
            with pytest.raises(grpc.aio.AioRpcError):
                await call(b"\xff\xff\xff\xff")
    lines = [r for r in caplog.records if "protobuf" in r.getMessage() or "DecodeError" in r.getMessage()]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_health_answers_a_valid_body_alongside(server: tuple[ServerThread, list[str]]) -> None:
    """The undecodable handling does not get in the way of a good body."""
    started, _ = server
    with grpc.insecure_channel(started.address) as channel:
        call = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        assert (
            call(health_pb2.HealthCheckRequest(), timeout=30).status == health_pb2.HealthCheckResponse.SERVING
        )
