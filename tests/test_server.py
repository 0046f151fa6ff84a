"""The server as its users meet it: grpcurl through reflection, health, errors, shutdown."""

import asyncio
import contextlib
import json
import os
import sys
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc.app import running
from participation_grpc.auth import mint_token
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc as pb_grpc
from tests.conftest import Service, detail, expect_error, serving, test_settings
from tests.network import free_port
from tests.seed import Seed
from tests.server_process import serve_environ

BIN = Path(sys.executable).parent
SERVICE = "participation.v1.ParticipationService"


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """A command run without blocking the event loop that serves it."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_grpcurl_lists_services_through_reflection_without_token(service: Service) -> None:
    code, out, err = await run(str(BIN / "grpcurl"), "-plaintext", service.address, "list")
    assert code == 0, err
    assert {SERVICE, "grpc.health.v1.Health"} <= set(out.split())
    code, out, err = await run(str(BIN / "grpcurl"), "-plaintext", service.address, "describe", SERVICE)
    assert code == 0 and "rpc JoinActivity" in out and "/v1/activities/{activity_id}:join" in out, err
    code, out, err = await run(
        str(BIN / "grpcurl"),
        "-plaintext",
        service.address,
        "describe",
        "participation.v1.JoinActivityRequest",
    )
    assert code == 0 and "activity_id" in out, err
    code, out, err = await run(
        str(BIN / "grpcurl"), "-plaintext", service.address, "describe", f"{SERVICE}.JoinActivity"
    )
    assert code == 0 and "rpc JoinActivity" in out, err


async def test_grpcurl_joins_an_activity_with_a_bearer_token(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    code, out, err = await run(
        str(BIN / "grpcurl"),
        "-plaintext",
        "-H",
        f"authorization: Bearer {service.token(user)}",
        "-d",
        json.dumps({"activity_id": str(activity)}),
        service.address,
        f"{SERVICE}/JoinActivity",
    )
    assert code == 0, err
    reply = json.loads(out)  # grpcurl prints the proto's own field names
    assert reply["participation_status"] == "PARTICIPATION_STATUS_REGISTERED"
    assert reply["user_id"] == str(user) and reply["role"] == "PARTICIPANT_ROLE_MEMBER"


async def test_grpcurl_shows_error_details(service: Service) -> None:
    user = await service.seed.user()
    code, _, err = await run(
        str(BIN / "grpcurl"),
        "-plaintext",
        "-H",
        f"authorization: Bearer {service.token(user)}",
        "-d",
        json.dumps({"activity_id": str(uuid.uuid4())}),
        service.address,
        f"{SERVICE}/JoinActivity",
    )
    assert code != 0
    assert "NotFound" in err and "ACTIVITY_NOT_FOUND" in err


async def test_health_is_serving_for_overall_and_service_without_token(service: Service) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_is_not_serving_when_database_is_unreachable() -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    settings = test_settings(unreachable)
    async with running(settings) as app, grpc.aio.insecure_channel(app.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE)
        )
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Calls say the database is unavailable, in words fit for a caller.
        stub = pb_grpc.ParticipationServiceStub(channel)
        token = mint_token(settings, uuid.uuid4())
        await expect_error(
            stub.JoinActivity(
                pb.JoinActivityRequest(activity_id=str(uuid.uuid4())),
                metadata=(("authorization", f"Bearer {token}"),),
            ),
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
        )


# What an empty request gets from each RPC: the lists about the caller answer; everything else
# names the id it is missing. Every method of the service is listed, so a new one must be added.
EMPTY_REQUEST = {
    "JoinActivity": "activity_id",
    "LeaveActivity": "activity_id",
    "CancelParticipation": "activity_id",
    "ListParticipants": "activity_id",
    "ListUserActivities": None,
    "PromoteParticipant": "activity_id",
    "DemoteParticipant": "activity_id",
    "MarkAttendance": "activity_id",
    "ConfirmAttendance": "activity_id",
    "ListPendingVerifications": None,
    "SendInvitations": "activity_id",
    "AcceptInvitation": "invitation_id",
    "DeclineInvitation": "invitation_id",
    "CancelInvitation": "invitation_id",
    "ListReceivedInvitations": None,
    "ListSentInvitations": None,
    "ListWaitlist": "activity_id",
    "WatchActivity": "activity_id",
}


async def test_every_method_is_implemented_and_an_empty_request_names_the_missing_field(
    service: Service,
) -> None:
    """No method answers UNIMPLEMENTED (or UNKNOWN, or INTERNAL): with an empty request each
    either answers or refuses INVALID_ARGUMENT naming the field it needs."""
    user = await service.seed.user()
    methods = pb.DESCRIPTOR.services_by_name["ParticipationService"].methods
    assert {m.name for m in methods} == set(EMPTY_REQUEST)
    for method in methods:
        request = getattr(pb, method.input_type.name)()
        call = getattr(service.stub, method.name)(request, metadata=service.auth(user))
        answer = call.read() if method.server_streaming else call
        field_name = EMPTY_REQUEST[method.name]
        if field_name is None:
            await answer
            continue
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await answer
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method.name
        violations = detail(caught.value, error_details_pb2.BadRequest).field_violations
        assert [v.field for v in violations] == [field_name], method.name


async def wait_for_lock_waiter(conn: asyncpg.Connection) -> None:
    """Until a service connection waits on a row lock (bounded; a condition, not a delay)."""
    for _ in range(500):
        # Inside a transaction PostgreSQL keeps answering from its first look unless told.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'participation-grpc' "
            "AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the call never reached the database lock")


async def test_sigterm_drains_in_flight_calls_then_exits_zero(database_url: str) -> None:
    """SIGTERM: health turns NOT_SERVING, new calls get SHUTTING_DOWN, the call in flight
    finishes, and the process exits 0."""
    conn = await asyncpg.connect(database_url)
    seed = Seed(conn)
    organizer, user, late = await seed.user(), await seed.user(), await seed.user()
    activity = await seed.activity(organizer)
    port = free_port()
    env = serve_environ(database_url, port, SHUTDOWN_GRACE_SECONDS="30", DB_LOCK_TIMEOUT_MS="30000")
    proc = await asyncio.create_subprocess_exec(str(BIN / "participation-grpc"), "serve", env=env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), wait_for_ready=True)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

    stub = pb_grpc.ParticipationServiceStub(channel)
    settings = test_settings(database_url)

    def auth(u: uuid.UUID) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {mint_token(settings, u)}"),)

    lock = conn.transaction()
    await lock.start()
    await conn.execute("SELECT 1 FROM activity.activities WHERE activity_id = $1 FOR UPDATE", activity)
    in_flight = asyncio.ensure_future(
        stub.JoinActivity(pb.JoinActivityRequest(activity_id=str(activity)), metadata=auth(user))
    )
    await wait_for_lock_waiter(conn)

    proc.terminate()
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await expect_error(
        stub.JoinActivity(pb.JoinActivityRequest(activity_id=str(activity)), metadata=auth(late)),
        grpc.StatusCode.UNAVAILABLE,
        "SHUTTING_DOWN",
    )
    await lock.rollback()
    reply = await in_flight
    assert reply.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    watch.cancel()
    await channel.close()
    await conn.close()


@pytest.mark.parametrize(
    "environ,variable",
    [
        ({"ENVIRONMENT": "production"}, "JWT_SECRET_KEY"),
        ({"ENVIRONMENT": "production", "JWT_SECRET_KEY": "short"}, "JWT_SECRET_KEY"),
        ({"GRPC_PORT": "fifty"}, "GRPC_PORT"),
    ],
)
async def test_serve_refuses_bad_configuration_naming_the_variable(
    database_url: str, environ: dict[str, str], variable: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "GRPC_"))}
    env.update({"DATABASE_URL": database_url, **environ})
    code, _, err = await run(str(BIN / "participation-grpc"), "serve", env=env)
    assert code != 0 and variable in err


@pytest.mark.parametrize("command", ["serve", "dev"])
async def test_a_second_server_on_a_taken_port_exits_2_naming_grpc_port(
    service: Service, command: str
) -> None:
    """One process binds its port alone: a second `serve` or `make run` on it (another
    checkout's, say) says so and exits, instead of silently sharing the first one's
    connections through SO_REUSEPORT, which only WORKERS needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "GRPC_"))}
    env.update(
        {
            "DATABASE_URL": service.settings.database_url or "",
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(service.app.port),
            "METRICS_PORT": "0",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "participation-grpc"), command, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:  # bounded: a second server that did bind would serve until killed
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"a second {command} kept running on the taken port") from None
    assert proc.returncode == 2, err.decode()
    assert f"GRPC_PORT: cannot listen on 127.0.0.1:{service.app.port}" in err.decode()
    reply = await health_pb2_grpc.HealthStub(service.channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING  # the first one still serves


async def test_deadline_cancels_the_database_work(service: Service) -> None:
    """A call whose deadline passes while it waits on a lock is cancelled in PostgreSQL too."""
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    locker = await asyncpg.connect(service.settings.database_url)
    lock = locker.transaction()
    await lock.start()
    await locker.execute("SELECT 1 FROM activity.activities WHERE activity_id = $1 FOR UPDATE", activity)
    call = service.stub.JoinActivity(
        pb.JoinActivityRequest(activity_id=str(activity)), metadata=service.auth(user), timeout=1.0
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(500):  # the cancel request reaches the server promptly; bounded wait
        await locker.execute("SELECT pg_stat_clear_snapshot()")  # see wait_for_lock_waiter
        waiting = await locker.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'participation-grpc' "
            "AND wait_event_type = 'Lock'"
        )
        if waiting == 0:
            break
        await asyncio.sleep(0.01)
    assert waiting == 0
    await lock.rollback()
    counts = await service.seed.counts(activity)
    assert counts["registered"] == 1  # the abandoned join wrote nothing
    await locker.close()


async def test_each_rpc_runs_exactly_one_statement(database_url: str) -> None:
    """One procedure call per RPC on a pooled connection: every statement the pool runs after
    its connections' setup is seen, so type look-ups or extra round trips would show."""
    statements: list[str] = []
    settings = test_settings(database_url, db_pool_min_size=1, db_pool_max_size=1)
    async with serving(settings, query_logger=lambda q: statements.append(q.query)) as service:
        organizer, user = await service.seed.user(), await service.seed.user()
        activity = await service.seed.activity(organizer)
        calls = [
            ("JoinActivity", pb.JoinActivityRequest(activity_id=str(activity))),
            ("ListParticipants", pb.ListParticipantsRequest(activity_id=str(activity))),
            ("ListUserActivities", pb.ListUserActivitiesRequest()),
            ("ListReceivedInvitations", pb.ListReceivedInvitationsRequest()),
            ("LeaveActivity", pb.LeaveActivityRequest(activity_id=str(activity))),
            ("JoinActivity", pb.JoinActivityRequest(activity_id=str(activity))),
            ("CancelParticipation", pb.CancelParticipationRequest(activity_id=str(activity))),
            (
                "SendInvitations",
                pb.SendInvitationsRequest(activity_id=str(activity), user_ids=[str(organizer)]),
            ),
        ]
        for method, request in calls:
            before = len(statements)
            with contextlib.suppress(grpc.aio.AioRpcError):  # failing calls count too
                await service.call(method, user, request)
            ran = statements[before:]
            assert len(ran) == 1 and "activity.sp_" in ran[0], (method, ran)
