"""Idempotent writes (contract 10): request_id replays, duplicates, reuse, failures, retention."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from participation_grpc import retention
from participation_grpc.replays import reply_pruner
from participation_grpc.settings import RateLimits
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, detail, error_info, expect_error, serving
from tests.conftest import test_settings as settings_for

Code = grpc.StatusCode
PAST = timedelta(hours=-2)
# Everything a write can change; each test has a database of its own, so whole tables are read.
TABLES = (
    "activities",
    "users",
    "participants",
    "waitlist_entries",
    "activity_invitations",
    "attendance_confirmations",
    "participation_events",
    "request_replies",
)


Request = TypeVar("Request", bound=Message)


@dataclass
class Write(Generic[Request]):
    """One write call set up to succeed, and what the same request answers when run afresh."""

    method: str
    caller: uuid.UUID
    request: Request
    again: tuple[Code, str] | None  # None: running it again would answer the same


async def join(service: Service) -> Write[pb.JoinActivityRequest]:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    return Write(
        "JoinActivity",
        user,
        pb.JoinActivityRequest(activity_id=str(activity)),
        (Code.ALREADY_EXISTS, "ALREADY_JOINED"),
    )


async def joined(service: Service) -> tuple[uuid.UUID, uuid.UUID]:
    """(a registered member, the activity), joined without a request id."""
    write = await join(service)
    await service.call(write.method, write.caller, write.request)
    return write.caller, uuid.UUID(write.request.activity_id)


async def leave(service: Service) -> Write[pb.LeaveActivityRequest]:
    user, activity = await joined(service)
    return Write(
        "LeaveActivity",
        user,
        pb.LeaveActivityRequest(activity_id=str(activity)),
        (Code.FAILED_PRECONDITION, "NOT_PARTICIPANT"),
    )


async def cancel(service: Service) -> Write[pb.CancelParticipationRequest]:
    user, activity = await joined(service)
    request = pb.CancelParticipationRequest(activity_id=str(activity), reason="ill")
    return Write("CancelParticipation", user, request, (Code.FAILED_PRECONDITION, "ALREADY_CANCELLED"))


async def with_member(
    service: Service, role: str = "member", starts_in: timedelta | None = None, attendance: str = "registered"
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(organizer, activity, a participant seeded with this role and attendance)."""
    organizer, member = await service.seed.user(), await service.seed.user()
    activity = (
        await service.seed.activity(organizer, starts_in=starts_in)
        if starts_in
        else await service.seed.activity(organizer)
    )
    await service.seed.participant(activity, member, role=role, attendance=attendance)
    return organizer, activity, member


async def promote(service: Service) -> Write[pb.PromoteParticipantRequest]:
    organizer, activity, member = await with_member(service)
    request = pb.PromoteParticipantRequest(activity_id=str(activity), user_id=str(member))
    return Write("PromoteParticipant", organizer, request, (Code.ALREADY_EXISTS, "ALREADY_CO_ORGANIZER"))


async def demote(service: Service) -> Write[pb.DemoteParticipantRequest]:
    organizer, activity, member = await with_member(service, role="co_organizer")
    request = pb.DemoteParticipantRequest(activity_id=str(activity), user_id=str(member))
    return Write("DemoteParticipant", organizer, request, (Code.FAILED_PRECONDITION, "NOT_CO_ORGANIZER"))


async def mark(service: Service) -> Write[pb.MarkAttendanceRequest]:
    organizer, activity, member = await with_member(service, starts_in=PAST)
    request = pb.MarkAttendanceRequest(
        activity_id=str(activity),
        entries=[
            pb.AttendanceEntry(user_id=str(member), status=pb.ATTENDANCE_STATUS_ATTENDED),
            pb.AttendanceEntry(user_id=str(uuid.uuid4()), status=pb.ATTENDANCE_STATUS_NO_SHOW),
        ],
    )
    return Write("MarkAttendance", organizer, request, None)


async def confirm(service: Service) -> Write[pb.ConfirmAttendanceRequest]:
    _, activity, member = await with_member(service, starts_in=PAST, attendance="attended")
    confirmer = await service.seed.user()
    await service.seed.participant(activity, confirmer, attendance="attended")
    request = pb.ConfirmAttendanceRequest(activity_id=str(activity), user_id=str(member))
    return Write("ConfirmAttendance", confirmer, request, (Code.ALREADY_EXISTS, "ALREADY_CONFIRMED"))


async def send(service: Service) -> Write[pb.SendInvitationsRequest]:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only")
    guests = [str(await service.seed.user()) for _ in range(2)]
    request = pb.SendInvitationsRequest(activity_id=str(activity), user_ids=guests, message="come")
    return Write("SendInvitations", organizer, request, None)  # again: ALREADY_INVITED items


async def invited(service: Service) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(organizer, guest, a pending invitation of the guest to an invite-only activity)."""
    organizer, guest = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only")
    return organizer, guest, await service.seed.invitation(activity, guest, organizer)


async def accept(service: Service) -> Write[pb.AcceptInvitationRequest]:
    _, guest, invitation = await invited(service)
    return Write(
        "AcceptInvitation",
        guest,
        pb.AcceptInvitationRequest(invitation_id=str(invitation)),
        (Code.FAILED_PRECONDITION, "ALREADY_RESPONDED"),
    )


async def decline(service: Service) -> Write[pb.DeclineInvitationRequest]:
    _, guest, invitation = await invited(service)
    return Write(
        "DeclineInvitation",
        guest,
        pb.DeclineInvitationRequest(invitation_id=str(invitation)),
        (Code.FAILED_PRECONDITION, "ALREADY_RESPONDED"),
    )


async def cancel_invitation(service: Service) -> Write[pb.CancelInvitationRequest]:
    organizer, _, invitation = await invited(service)
    return Write(
        "CancelInvitation",
        organizer,
        pb.CancelInvitationRequest(invitation_id=str(invitation)),
        (Code.FAILED_PRECONDITION, "INVITATION_CANCELLED"),
    )


WRITES: dict[str, Callable[[Service], Awaitable[Write[Any]]]] = {
    "JoinActivity": join,
    "LeaveActivity": leave,
    "CancelParticipation": cancel,
    "PromoteParticipant": promote,
    "DemoteParticipant": demote,
    "MarkAttendance": mark,
    "ConfirmAttendance": confirm,
    "SendInvitations": send,
    "AcceptInvitation": accept,
    "DeclineInvitation": decline,
    "CancelInvitation": cancel_invitation,
}


def with_id(request: Request, request_id: str) -> Request:
    copy = type(request)()
    copy.CopyFrom(request)
    fields: Any = copy  # every write request has a request_id; Message's type cannot say so
    fields.request_id = request_id
    return copy


async def state(service: Service) -> dict[str, list[str]]:
    return {
        table: sorted(
            await service.seed.conn.fetchval(
                f"SELECT coalesce(array_agg(to_jsonb(t)::text), '{{}}') FROM activity.{table} t"
            )
        )
        for table in TABLES
    }


async def replies(service: Service) -> int:
    return int(await service.seed.conn.fetchval("SELECT count(*) FROM activity.request_replies"))


def test_every_write_rpc_has_a_request_id_and_a_scenario_here() -> None:
    methods = pb.DESCRIPTOR.services_by_name["ParticipationService"].methods
    with_request_id = {m.name for m in methods if "request_id" in m.input_type.fields_by_name}
    assert with_request_id == set(WRITES)


@pytest.mark.parametrize("method", sorted(WRITES))
async def test_a_retry_with_the_same_request_id_returns_the_first_reply_and_changes_nothing(
    service: Service, method: str
) -> None:
    write = await WRITES[method](service)
    request = with_id(write.request, str(uuid.uuid4()))
    first = await service.call(method, write.caller, request)
    before = await state(service)
    assert await service.call(method, write.caller, request) == first
    assert await service.call(method, write.caller, request) == first
    assert await state(service) == before  # no row, counter or event changed, none added
    assert await replies(service) == 1
    if write.again is not None:  # the same request run afresh would not have answered that
        await expect_error(service.call(method, write.caller, with_id(write.request, "")), *write.again)


async def test_a_join_retried_after_a_lost_reply_answers_registered_again(service: Service) -> None:
    write = await join(service)
    request = with_id(write.request, str(uuid.uuid4()))
    first = await service.call("JoinActivity", write.caller, request)  # its reply is lost
    retried = await service.call("JoinActivity", write.caller, request)
    assert retried.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    assert retried.joined_at == first.joined_at
    activity = uuid.UUID(write.request.activity_id)
    assert (await service.seed.counts(activity))["registered"] == 2
    events = await service.seed.conn.fetch(
        "SELECT event_type FROM activity.participation_events WHERE activity_id = $1 AND user_id = $2",
        activity,
        write.caller,
    )
    assert [e["event_type"] for e in events] == ["joined"]  # one JOINED, never a second


async def test_a_replayed_mark_does_not_undo_a_later_change(service: Service) -> None:
    write = await mark(service)
    request = with_id(write.request, str(uuid.uuid4()))
    first = await service.call("MarkAttendance", write.caller, request)
    member = write.request.entries[0].user_id
    activity = write.request.activity_id
    await service.call(
        "MarkAttendance",
        write.caller,
        pb.MarkAttendanceRequest(
            activity_id=activity,
            entries=[pb.AttendanceEntry(user_id=member, status=pb.ATTENDANCE_STATUS_NO_SHOW)],
        ),
    )
    assert await service.call("MarkAttendance", write.caller, request) == first
    status = await service.seed.conn.fetchval(
        "SELECT attendance_status::text FROM activity.participants WHERE activity_id = $1 AND user_id = $2",
        uuid.UUID(activity),
        uuid.UUID(member),
    )
    assert status == "no_show"


async def wait_for_lock_waiters(conn: asyncpg.Connection, count: int) -> None:
    """Until `count` sessions of this database wait for a lock (bounded; a condition, not a
    delay). Inside a transaction PostgreSQL keeps answering from its first look unless told."""
    for _ in range(5000):
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        if (
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            >= count
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} calls reached the database's locks")


async def test_concurrent_duplicates_wait_for_the_first_and_all_get_its_reply(database_url: str) -> None:
    # Every duplicate on a connection of its own from the start, and no wait cut short however
    # slowly a busy machine brings them all to the database.
    settings = settings_for(
        database_url, db_pool_min_size=8, db_lock_timeout_ms=60_000, db_statement_timeout_ms=60_000
    )
    duplicates = settings.db_pool_max_size // 4  # what reaches the database at once (5)
    async with serving(settings) as service:
        write = await join(service)
        activity = uuid.UUID(write.request.activity_id)
        request = with_id(write.request, str(uuid.uuid4()))
        blocker = await asyncpg.connect(database_url)
        try:
            async with blocker.transaction():
                # The activity held: the first call waits for it, the others for the first.
                await blocker.execute("SELECT activity.pa_lock_activity($1)", activity)
                calls = [
                    asyncio.ensure_future(service.call("JoinActivity", write.caller, request))
                    for _ in range(duplicates)
                ]
                await wait_for_lock_waiters(blocker, duplicates)
            answers = await asyncio.gather(*calls)
        finally:
            await blocker.close()
        assert answers[0].participation_status == pb.PARTICIPATION_STATUS_REGISTERED
        assert all(answer == answers[0] for answer in answers)
        counts = await service.seed.counts(activity)
        assert counts["registered"] == counts["counter"] == 2
        assert await replies(service) == 1


async def test_the_same_request_id_for_another_request_is_request_id_reused(service: Service) -> None:
    first, other = await join(service), await join(service)
    request_id = str(uuid.uuid4())
    await service.call("JoinActivity", first.caller, with_id(first.request, request_id))
    before = await state(service)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.call("JoinActivity", first.caller, with_id(other.request, request_id))
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "REQUEST_ID_REUSED"
    violations = detail(caught.value, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["request_id"]
    assert await state(service) == before


async def test_the_same_request_id_for_another_rpc_is_request_id_reused(service: Service) -> None:
    write = await join(service)
    request_id = str(uuid.uuid4())
    await service.call("JoinActivity", write.caller, with_id(write.request, request_id))
    before = await state(service)
    leave_request = pb.LeaveActivityRequest(activity_id=write.request.activity_id, request_id=request_id)
    await expect_error(
        service.call("LeaveActivity", write.caller, leave_request), Code.INVALID_ARGUMENT, "REQUEST_ID_REUSED"
    )
    assert await state(service) == before


async def test_request_ids_belong_to_their_caller(service: Service) -> None:
    first, second = await join(service), await join(service)
    request_id = str(uuid.uuid4())
    mine = await service.call("JoinActivity", first.caller, with_id(first.request, request_id))
    theirs = await service.call("JoinActivity", second.caller, with_id(first.request, request_id))
    assert (mine.user_id, theirs.user_id) == (str(first.caller), str(second.caller))
    assert await replies(service) == 2


async def test_a_failed_call_is_not_remembered_and_its_retry_runs_afresh(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, status="cancelled")
    request = pb.JoinActivityRequest(activity_id=str(activity), request_id=str(uuid.uuid4()))
    await expect_error(
        service.call("JoinActivity", user, request), Code.FAILED_PRECONDITION, "ACTIVITY_NOT_PUBLISHED"
    )
    assert await replies(service) == 0
    await service.seed.conn.execute(
        "UPDATE activity.activities SET status = 'published' WHERE activity_id = $1", activity
    )
    reply = await service.call("JoinActivity", user, request)
    assert reply.participation_status == pb.PARTICIPATION_STATUS_REGISTERED


async def test_a_reply_older_than_24_hours_is_not_replayed_and_is_pruned(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = await join(service)
    request = with_id(write.request, str(uuid.uuid4()))
    await service.call("JoinActivity", write.caller, request)
    await service.seed.conn.execute(
        "UPDATE activity.request_replies SET created_at = now() - interval '24 hours 1 second'"
    )
    await expect_error(
        service.call("JoinActivity", write.caller, request), Code.ALREADY_EXISTS, "ALREADY_JOINED"
    )
    for hours in (25, 26, 48, 23):  # with the first reply, four are past the window
        await service.seed.conn.execute(
            "INSERT INTO activity.request_replies (user_id, request_id, rpc, request_md5, reply, "
            "created_at) VALUES ($1, $2, 'JoinActivity', $2, '{}', now() - $3::interval)",
            write.caller,
            uuid.uuid4(),
            timedelta(hours=hours),
        )
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    assert await reply_pruner(service.app.db).prune() == 4
    assert await replies(service) == 1


async def test_replays_are_not_charged_to_the_rate_limit(database_url: str) -> None:
    settings = settings_for(database_url, rate_limit_enabled=True, rate_limits=RateLimits(write=2))
    async with serving(settings) as service:
        first, second, third = await join(service), await join(service), await join(service)
        request = with_id(first.request, str(uuid.uuid4()))
        reply = await service.call("JoinActivity", first.caller, request)  # charged: 1 of 2
        for _ in range(5):
            assert await service.call("JoinActivity", first.caller, request) == reply
        await service.call("JoinActivity", first.caller, second.request)  # charged: 2 of 2
        await expect_error(
            service.call("JoinActivity", first.caller, third.request), Code.RESOURCE_EXHAUSTED, "RATE_LIMITED"
        )
        # The budget is spent, and a replay is still answered.
        assert await service.call("JoinActivity", first.caller, request) == reply


def malformed_request(method: str) -> Any:
    """A request of `method` whose fields are all well formed, except its request_id."""
    request_type = getattr(pb, f"{method}Request")
    values: dict[str, Any] = {"request_id": "not-a-uuid"}
    for field in request_type.DESCRIPTOR.fields:
        if field.name.endswith("_id") and field.name != "request_id":
            values[field.name] = str(uuid.uuid4())
    if method == "MarkAttendance":
        values["entries"] = [
            pb.AttendanceEntry(user_id=str(uuid.uuid4()), status=pb.ATTENDANCE_STATUS_ATTENDED)
        ]
    if method == "SendInvitations":
        values["user_ids"] = [str(uuid.uuid4())]
    return request_type(**values)


@pytest.mark.parametrize("method", sorted(WRITES))
async def test_a_malformed_request_id_is_invalid_argument_naming_the_field(
    service: Service, method: str
) -> None:
    user = await service.seed.user()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.call(method, user, malformed_request(method))
    assert caught.value.code() == Code.INVALID_ARGUMENT, caught.value.details()
    violations = detail(caught.value, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["request_id"]


@pytest.mark.parametrize("value", [f"{{{uuid.uuid4()}}}", uuid.uuid4().hex, f" {uuid.uuid4()}"])
async def test_a_request_id_not_in_canonical_form_is_refused(service: Service, value: str) -> None:
    write = await join(service)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.call("JoinActivity", write.caller, with_id(write.request, value))
    assert caught.value.code() == Code.INVALID_ARGUMENT


async def test_platform_tools_call_the_procedures_with_the_ids_alone_or_with_a_request_id(
    service: Service,
) -> None:
    write = await join(service)
    activity = uuid.UUID(write.request.activity_id)
    conn = service.seed.conn
    await conn.fetchrow("SELECT * FROM activity.sp_join_activity($1, $2)", activity, write.caller)
    request_id = uuid.uuid4()
    leave = "SELECT * FROM activity.sp_leave_activity($1, $2, $3)"
    first = await conn.fetchrow(leave, activity, write.caller, request_id)
    assert await conn.fetchrow(leave, activity, write.caller, request_id) == first
