"""MarkAttendance, ConfirmAttendance and ListPendingVerifications (contract 4.4, 8)."""

import uuid
from collections.abc import Awaitable
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, detail, expect_error

Code = grpc.StatusCode
ATTENDED, NO_SHOW = pb.ATTENDANCE_STATUS_ATTENDED, pb.ATTENDANCE_STATUS_NO_SHOW
PAST = timedelta(hours=-2)


def mark(
    service: Service,
    caller: uuid.UUID,
    activity: uuid.UUID,
    *entries: tuple[uuid.UUID | str, pb.AttendanceStatus.ValueType],
) -> Awaitable[pb.MarkAttendanceResponse]:
    request = pb.MarkAttendanceRequest(
        activity_id=str(activity),
        entries=[pb.AttendanceEntry(user_id=str(user), status=status) for user, status in entries],
    )
    return service.call("MarkAttendance", caller, request)


def confirm(
    service: Service, caller: uuid.UUID, activity: uuid.UUID, user: uuid.UUID
) -> Awaitable[pb.ConfirmAttendanceResponse]:
    request = pb.ConfirmAttendanceRequest(activity_id=str(activity), user_id=str(user))
    return service.call("ConfirmAttendance", caller, request)


def pending(
    service: Service, caller: uuid.UUID, page_size: int = 0, page_token: str = ""
) -> Awaitable[pb.ListPendingVerificationsResponse]:
    request = pb.ListPendingVerificationsRequest(page_size=page_size, page_token=page_token)
    return service.call("ListPendingVerifications", caller, request)


async def past_activity(
    service: Service, members: int = 2, *, attended: bool = False
) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """(organizer, activity that started two hours ago, registered members)."""
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, starts_in=PAST)
    users = [await service.seed.user() for _ in range(members)]
    for user in users:
        await service.seed.participant(activity, user, attendance="attended" if attended else "registered")
    return organizer, activity, users


async def attendance_of(service: Service, activity: uuid.UUID, user: uuid.UUID) -> str:
    status: str = await service.seed.conn.fetchval(
        "SELECT attendance_status::text FROM activity.participants WHERE activity_id = $1 AND user_id = $2",
        activity,
        user,
    )
    return status


# MarkAttendance


async def test_organizer_marks_attendance_of_registered_participants(service: Service) -> None:
    organizer, activity, (a, b) = await past_activity(service)
    reply = await mark(service, organizer, activity, (a, ATTENDED), (b, NO_SHOW))
    assert (reply.activity_id, reply.updated_count, list(reply.failures)) == (str(activity), 2, [])
    assert await attendance_of(service, activity, a) == "attended"
    assert await attendance_of(service, activity, b) == "no_show"


async def test_co_organizer_may_mark_attendance(service: Service) -> None:
    _, activity, (co, member) = await past_activity(service)
    await service.seed.conn.execute(
        "UPDATE activity.participants SET role = 'co_organizer' WHERE user_id = $1", co
    )
    reply = await mark(service, co, activity, (member, ATTENDED))
    assert reply.updated_count == 1


async def test_mark_attendance_by_member_is_not_authorized(service: Service) -> None:
    _, activity, (member, other) = await past_activity(service)
    await expect_error(
        mark(service, member, activity, (other, ATTENDED)), Code.PERMISSION_DENIED, "NOT_AUTHORIZED"
    )


async def test_cancelled_co_organizer_may_no_longer_mark_attendance(service: Service) -> None:
    _organizer, activity, (member,) = await past_activity(service, 1)
    former = await service.seed.user()
    await service.seed.participant(activity, former, role="co_organizer", status="cancelled")
    await expect_error(
        mark(service, former, activity, (member, ATTENDED)), Code.PERMISSION_DENIED, "NOT_AUTHORIZED"
    )


async def test_mark_attendance_before_start_is_activity_not_completed(service: Service) -> None:
    organizer, member = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await service.seed.participant(activity, member)
    await expect_error(
        mark(service, organizer, activity, (member, ATTENDED)),
        Code.FAILED_PRECONDITION,
        "ACTIVITY_NOT_COMPLETED",
    )


async def test_mark_attendance_on_missing_activity_is_activity_not_found(service: Service) -> None:
    organizer, _, (member, _) = await past_activity(service)
    await expect_error(
        mark(service, organizer, uuid.uuid4(), (member, ATTENDED)), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND"
    )


async def test_mark_attendance_of_non_participants_reports_each_failure(service: Service) -> None:
    organizer, activity, (member, _) = await past_activity(service)
    cancelled, stranger = await service.seed.user(), await service.seed.user()
    await service.seed.participant(activity, cancelled, status="cancelled")
    missing = uuid.uuid4()
    reply = await mark(
        service,
        organizer,
        activity,
        (stranger, ATTENDED),
        (member, ATTENDED),
        (cancelled, NO_SHOW),
        (missing, NO_SHOW),
    )
    assert reply.updated_count == 1
    assert [(f.user_id, f.reason) for f in reply.failures] == [
        (str(stranger), "NOT_A_PARTICIPANT"),
        (str(cancelled), "NOT_A_PARTICIPANT"),
        (str(missing), "NOT_A_PARTICIPANT"),
    ]
    assert await attendance_of(service, activity, cancelled) == "registered"


async def test_mark_attendance_of_waitlisted_user_is_not_a_participant(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=1)
    waiting = await service.seed.user()
    await service.call("JoinActivity", waiting, pb.JoinActivityRequest(activity_id=str(activity)))
    await service.seed.start(activity)
    reply = await mark(service, organizer, activity, (waiting, ATTENDED))
    assert (reply.updated_count, [f.reason for f in reply.failures]) == (0, ["NOT_A_PARTICIPANT"])


async def test_no_show_count_follows_transitions_and_is_never_double_counted(service: Service) -> None:
    organizer, activity, (member,) = await past_activity(service, 1)
    counters = service.seed.user_counters
    steps = [(NO_SHOW, 1, 0), (NO_SHOW, 1, 0), (ATTENDED, 0, 1), (ATTENDED, 0, 1), (NO_SHOW, 1, 0)]
    for status, no_shows, attended in steps:
        reply = await mark(service, organizer, activity, (member, status))
        assert reply.updated_count == 1
        got = await counters(member)
        assert (got["no_show_count"], got["activities_attended_count"]) == (no_shows, attended)


async def test_no_show_counts_add_up_across_activities(service: Service) -> None:
    organizer, first, (member,) = await past_activity(service, 1)
    second = await service.seed.activity(organizer, starts_in=PAST)
    await service.seed.participant(second, member)
    await mark(service, organizer, first, (member, NO_SHOW))
    await mark(service, organizer, second, (member, NO_SHOW))
    assert (await service.seed.user_counters(member))["no_show_count"] == 2
    await mark(service, organizer, first, (member, ATTENDED))
    assert (await service.seed.user_counters(member))["no_show_count"] == 1


async def test_mark_attendance_with_more_than_100_entries_is_too_many_updates(service: Service) -> None:
    organizer, activity, _ = await past_activity(service, 0)
    entries = [(uuid.uuid4(), ATTENDED) for _ in range(101)]
    await expect_error(
        mark(service, organizer, activity, *entries), Code.INVALID_ARGUMENT, "TOO_MANY_UPDATES"
    )


async def test_mark_attendance_with_100_entries_is_accepted(service: Service) -> None:
    organizer, activity, _ = await past_activity(service, 0)
    reply = await mark(service, organizer, activity, *[(uuid.uuid4(), ATTENDED) for _ in range(100)])
    assert (reply.updated_count, len(reply.failures)) == (0, 100)


async def test_mark_attendance_without_entries_is_invalid_argument(service: Service) -> None:
    organizer, activity, _ = await past_activity(service, 0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mark(service, organizer, activity)
    assert caught.value.code() == Code.INVALID_ARGUMENT
    bad_request = detail(caught.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["entries"]


async def test_mark_attendance_with_repeated_user_is_invalid_argument(service: Service) -> None:
    organizer, activity, (member,) = await past_activity(service, 1)
    await expect_error(
        mark(service, organizer, activity, (member, ATTENDED), (member, NO_SHOW)),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert (await service.seed.user_counters(member))["no_show_count"] == 0


@pytest.mark.parametrize(
    "status",
    [pb.ATTENDANCE_STATUS_UNSPECIFIED, pb.ATTENDANCE_STATUS_REGISTERED, pb.AttendanceStatus.ValueType(42)],
)  # 42: no such status
async def test_mark_attendance_with_status_other_than_attended_or_no_show_is_invalid(
    service: Service, status: pb.AttendanceStatus.ValueType
) -> None:
    organizer, activity, (member,) = await past_activity(service, 1)
    await expect_error(
        mark(service, organizer, activity, (member, status)), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )


async def test_mark_attendance_with_malformed_user_id_is_invalid_argument(service: Service) -> None:
    organizer, activity, _ = await past_activity(service, 0)
    await expect_error(
        mark(service, organizer, activity, ("x", ATTENDED)), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )


# ConfirmAttendance


async def test_confirm_attendance_increments_confirmed_users_verification_count(service: Service) -> None:
    _, activity, (a, b, c) = await past_activity(service, 3, attended=True)
    first = await confirm(service, a, activity, c)
    assert (first.activity_id, first.user_id, first.verification_count) == (str(activity), str(c), 1)
    uuid.UUID(first.confirmation_id)
    second = await confirm(service, b, activity, c)
    assert second.verification_count == 2
    assert (await service.seed.user_counters(c))["verification_count"] == 2
    assert (await service.seed.user_counters(a))["verification_count"] == 0


async def test_confirming_oneself_is_self_confirmation(service: Service) -> None:
    _, activity, (a, _) = await past_activity(service, attended=True)
    info = await expect_error(confirm(service, a, activity, a), Code.INVALID_ARGUMENT, "SELF_CONFIRMATION")
    assert info.metadata["user_id"] == str(a)


async def test_confirm_on_missing_activity_is_activity_not_found(service: Service) -> None:
    _, _, (a, b) = await past_activity(service, attended=True)
    await expect_error(confirm(service, a, uuid.uuid4(), b), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_confirm_before_start_is_activity_not_completed(service: Service) -> None:
    """Contract 4.4: checked right after the activity is found, before anything about users."""
    organizer, member = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await service.seed.participant(activity, member)
    await expect_error(
        confirm(service, member, activity, uuid.uuid4()), Code.FAILED_PRECONDITION, "ACTIVITY_NOT_COMPLETED"
    )


async def test_confirm_by_caller_without_user_record_is_user_not_found(service: Service) -> None:
    _, activity, (a, _) = await past_activity(service, attended=True)
    ghost = uuid.uuid4()
    info = await expect_error(confirm(service, ghost, activity, a), Code.NOT_FOUND, "USER_NOT_FOUND")
    assert info.metadata["user_id"] == str(ghost)


async def test_confirm_of_unknown_user_is_user_not_found(service: Service) -> None:
    _, activity, (a, _) = await past_activity(service, attended=True)
    unknown = uuid.uuid4()
    info = await expect_error(confirm(service, a, activity, unknown), Code.NOT_FOUND, "USER_NOT_FOUND")
    assert info.metadata["user_id"] == str(unknown)


async def test_confirm_between_blocked_users_is_blocked_user(service: Service) -> None:
    _, activity, (a, b) = await past_activity(service, attended=True)
    await service.seed.block(b, a)
    await expect_error(confirm(service, a, activity, b), Code.PERMISSION_DENIED, "BLOCKED_USER")
    assert (await service.seed.user_counters(b))["verification_count"] == 0


async def test_confirm_by_participant_not_marked_attended_is_confirmer_not_attended(service: Service) -> None:
    organizer, activity, (a, b) = await past_activity(service)
    await mark(service, organizer, activity, (a, NO_SHOW), (b, ATTENDED))
    await expect_error(confirm(service, a, activity, b), Code.FAILED_PRECONDITION, "CONFIRMER_NOT_ATTENDED")


async def test_confirm_by_stranger_of_public_activity_is_confirmer_not_attended(service: Service) -> None:
    _, activity, (a, _) = await past_activity(service, attended=True)
    stranger = await service.seed.user()
    await expect_error(
        confirm(service, stranger, activity, a), Code.FAILED_PRECONDITION, "CONFIRMER_NOT_ATTENDED"
    )


async def test_confirm_of_participant_not_marked_attended_is_confirmed_not_attended(service: Service) -> None:
    organizer, activity, (a, b) = await past_activity(service)
    await mark(service, organizer, activity, (a, ATTENDED), (b, NO_SHOW))
    await expect_error(confirm(service, a, activity, b), Code.FAILED_PRECONDITION, "CONFIRMED_NOT_ATTENDED")


async def test_confirming_twice_is_already_confirmed(service: Service) -> None:
    _, activity, (a, b) = await past_activity(service, attended=True)
    await confirm(service, a, activity, b)
    await expect_error(confirm(service, a, activity, b), Code.ALREADY_EXISTS, "ALREADY_CONFIRMED")
    assert (await service.seed.user_counters(b))["verification_count"] == 1


# ListPendingVerifications


async def test_pending_verifications_list_attended_people_not_yet_confirmed(service: Service) -> None:
    organizer, activity, (me, a, b, absent) = await past_activity(service, 4)
    await mark(
        service,
        organizer,
        activity,
        (me, ATTENDED),
        (a, ATTENDED),
        (b, ATTENDED),
        (absent, NO_SHOW),
        (organizer, ATTENDED),
    )
    await confirm(service, me, activity, a)
    reply = await pending(service, me)
    assert reply.total_size == 1 and reply.next_page_token == ""
    (item,) = reply.activities
    assert (item.activity_id, item.title) == (str(activity), "Activity")
    assert {p.user_id for p in item.participants_to_confirm} == {str(organizer), str(b)}
    person = next(p for p in item.participants_to_confirm if p.user_id == str(b))
    assert person.username and person.first_name == "Test" and person.profile_photo_url


async def test_pending_verifications_never_show_blocked_users(service: Service) -> None:
    _, _activity, (me, friend, foe) = await past_activity(service, 3, attended=True)
    await service.seed.block(foe, me)
    (item,) = (await pending(service, me)).activities
    assert [p.user_id for p in item.participants_to_confirm] == [str(friend)]


async def test_pending_verifications_leave_out_activities_with_nobody_left(service: Service) -> None:
    _, activity, (me, other) = await past_activity(service, attended=True)
    await confirm(service, me, activity, other)
    reply = await pending(service, me)
    assert (list(reply.activities), reply.total_size) == ([], 0)


async def test_pending_verifications_need_the_caller_to_have_attended(service: Service) -> None:
    organizer, activity, (me, other) = await past_activity(service)
    await mark(service, organizer, activity, (me, NO_SHOW), (other, ATTENDED))
    assert (await pending(service, me)).total_size == 0


async def test_pending_verifications_of_caller_without_user_record_are_empty(service: Service) -> None:
    reply = await pending(service, uuid.uuid4())
    assert (list(reply.activities), reply.total_size, reply.next_page_token) == ([], 0, "")


async def test_pending_verifications_page_with_tokens_latest_first(service: Service) -> None:
    me, organizer = await service.seed.user(), await service.seed.user()
    activities = []
    for hours in range(3, 8):  # started 3..7 hours ago
        activity = await service.seed.activity(organizer, starts_in=timedelta(hours=-hours))
        await service.seed.participant(activity, me, attendance="attended")
        await service.seed.conn.execute(
            "UPDATE activity.participants SET attendance_status = 'attended' "
            "WHERE activity_id = $1 AND user_id = $2",
            activity,
            organizer,
        )
        activities.append(str(activity))
    seen, token = [], ""
    for _ in range(3):
        reply = await pending(service, me, page_size=2, page_token=token)
        assert reply.total_size == 5
        seen += [a.activity_id for a in reply.activities]
        token = reply.next_page_token
        if not token:
            break
    assert seen == activities  # latest first: the one that started 3 hours ago leads
    await expect_error(
        pending(service, organizer, page_size=2, page_token="forged"),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_activity_hidden_by_block_with_organizer_leaves_pending_and_confirm(service: Service) -> None:
    organizer, activity, (me, other) = await past_activity(service, attended=True)
    await service.seed.block(me, organizer)
    assert (await pending(service, me)).total_size == 0
    await expect_error(confirm(service, me, activity, other), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")
