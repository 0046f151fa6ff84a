"""JoinActivity: every join check (contract 4.3), first failure wins, and what a join writes."""

import uuid
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, detail, error_info, expect_error
from tests.participation import join
from tests.seed import now

Code = grpc.StatusCode


async def test_join_with_free_seat_registers_member_and_counts_seat(service: Service) -> None:
    organizer, joiner = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=3)
    reply = await join(service, joiner, activity)
    assert (reply.activity_id, reply.user_id) == (str(activity), str(joiner))
    assert reply.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    assert reply.role == pb.PARTICIPANT_ROLE_MEMBER
    assert reply.waitlist_position == 0
    assert abs(reply.joined_at.ToDatetime().timestamp() - now().timestamp()) < 60
    counts = await service.seed.counts(activity)
    assert counts["counter"] == counts["registered"] == 2


async def test_join_full_activity_puts_caller_on_waitlist_in_order(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=2)
    first, second, third = [await service.seed.user() for _ in range(3)]
    assert (await join(service, first, activity)).participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    waiting = [await join(service, u, activity) for u in (second, third)]
    assert [w.participation_status for w in waiting] == [pb.PARTICIPATION_STATUS_WAITLISTED] * 2
    assert [w.waitlist_position for w in waiting] == [1, 2]
    assert [w.role for w in waiting] == [pb.PARTICIPANT_ROLE_UNSPECIFIED] * 2
    assert waiting[0].HasField("joined_at")
    counts = await service.seed.counts(activity)
    assert (counts["counter"], counts["wait_counter"], counts["positions"]) == (2, 2, [1, 2])


async def test_join_malformed_activity_id_is_invalid_argument_naming_field(service: Service) -> None:
    user = await service.seed.user()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await join(service, user, "not-a-uuid")
    assert caught.value.code() == Code.INVALID_ARGUMENT
    bad_request = detail(caught.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["activity_id"]
    assert "activity_id" in (caught.value.details() or "")
    assert error_info(caught.value).metadata["activity_id"] == "not-a-uuid"


async def test_join_missing_activity_is_not_found(service: Service) -> None:
    user = await service.seed.user()
    missing = uuid.uuid4()
    info = await expect_error(join(service, user, missing), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")
    assert info.metadata["activity_id"] == str(missing)


async def test_join_someone_elses_draft_is_reported_as_missing(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    draft = await service.seed.activity(organizer, status="draft")
    await expect_error(join(service, user, draft), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


@pytest.mark.parametrize("status", ["cancelled", "completed"])
async def test_join_unpublished_activity_is_refused(service: Service, status: str) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, status=status)
    await expect_error(join(service, user, activity), Code.FAILED_PRECONDITION, "ACTIVITY_NOT_PUBLISHED")


async def test_join_started_activity_is_refused(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, starts_in=timedelta(minutes=-5))
    await expect_error(join(service, user, activity), Code.FAILED_PRECONDITION, "ACTIVITY_IN_PAST")


async def test_join_by_token_without_user_record_is_user_not_found(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    ghost = uuid.uuid4()
    info = await expect_error(join(service, ghost, activity), Code.NOT_FOUND, "USER_NOT_FOUND")
    assert info.metadata["user_id"] == str(ghost)


@pytest.mark.parametrize("status,ban_expires_in", [("banned", None), ("temporary_ban", timedelta(days=1))])
async def test_join_by_banned_user_is_refused(
    service: Service, status: str, ban_expires_in: timedelta | None
) -> None:
    organizer = await service.seed.user()
    user = await service.seed.user(
        status=status, ban_expires_at=now() + ban_expires_in if ban_expires_in else None
    )
    activity = await service.seed.activity(organizer)
    await expect_error(join(service, user, activity), Code.PERMISSION_DENIED, "USER_BANNED")


async def test_join_after_temporary_ban_expired_is_allowed(service: Service) -> None:
    organizer = await service.seed.user()
    user = await service.seed.user(status="temporary_ban", ban_expires_at=now() - timedelta(hours=1))
    activity = await service.seed.activity(organizer)
    assert (await join(service, user, activity)).participation_status == pb.PARTICIPATION_STATUS_REGISTERED


async def test_join_own_activity_is_refused(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    await expect_error(join(service, organizer, activity), Code.FAILED_PRECONDITION, "USER_IS_ORGANIZER")


async def test_join_twice_is_already_joined_whether_registered_or_waitlisted(service: Service) -> None:
    organizer, registered, waiting = [await service.seed.user() for _ in range(3)]
    activity = await service.seed.activity(organizer, max_participants=2)
    await join(service, registered, activity)
    await join(service, waiting, activity)
    for user in (registered, waiting):
        await expect_error(join(service, user, activity), Code.ALREADY_EXISTS, "ALREADY_JOINED")
    counts = await service.seed.counts(activity)
    assert (counts["counter"], counts["positions"]) == (2, [1])


@pytest.mark.parametrize("organizer_blocks", [True, False])
async def test_join_blocked_with_organizer_is_refused(service: Service, organizer_blocks: bool) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await (service.seed.block(organizer, user) if organizer_blocks else service.seed.block(user, organizer))
    await expect_error(join(service, user, activity), Code.PERMISSION_DENIED, "BLOCKED_USER")


async def test_join_xxl_activity_ignores_blocks(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, type_="xxl")
    await service.seed.block(organizer, user)
    assert (await join(service, user, activity)).participation_status == pb.PARTICIPATION_STATUS_REGISTERED


@pytest.mark.parametrize("friendship", [None, "pending"])
async def test_join_friends_only_without_accepted_friendship_is_refused(
    service: Service, friendship: str | None
) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="friends_only")
    if friendship:
        await service.seed.friends(organizer, user, status=friendship)
    await expect_error(join(service, user, activity), Code.PERMISSION_DENIED, "FRIENDS_ONLY")


async def test_join_friends_only_as_friend_registers(service: Service) -> None:
    organizer, friend = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="friends_only")
    await service.seed.friends(friend, organizer)
    assert (await join(service, friend, activity)).participation_status == pb.PARTICIPATION_STATUS_REGISTERED


async def test_join_invite_only_without_invitation_is_refused(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only")
    await expect_error(join(service, user, activity), Code.PERMISSION_DENIED, "INVITE_ONLY")


async def test_join_invite_only_with_expired_invitation_is_refused(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only")
    await service.seed.invitation(activity, user, organizer, expires_in=timedelta(minutes=-1))
    await expect_error(join(service, user, activity), Code.PERMISSION_DENIED, "INVITE_ONLY")


async def test_join_invite_only_marks_invitation_accepted_even_when_waitlisted(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only", max_participants=1)
    invitation = await service.seed.invitation(activity, user, organizer)
    reply = await join(service, user, activity)
    assert reply.participation_status == pb.PARTICIPATION_STATUS_WAITLISTED
    row = await service.seed.fetchrow(
        "SELECT status::text, responded_at FROM activity.activity_invitations WHERE invitation_id = $1",
        invitation,
    )
    assert row["status"] == "accepted" and row["responded_at"] is not None


async def test_join_during_priority_window_is_refused_for_free_users(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, joinable_at_free=now() + timedelta(days=1))
    await expect_error(join(service, user, activity), Code.PERMISSION_DENIED, "PREMIUM_ONLY_PERIOD")


async def test_join_during_priority_window_with_expired_premium_counts_as_free(service: Service) -> None:
    organizer = await service.seed.user()
    lapsed = await service.seed.user(
        subscription="premium", subscription_expires_at=now() - timedelta(days=1)
    )
    activity = await service.seed.activity(organizer, joinable_at_free=now() + timedelta(days=1))
    await expect_error(join(service, lapsed, activity), Code.PERMISSION_DENIED, "PREMIUM_ONLY_PERIOD")


@pytest.mark.parametrize("level", ["club", "premium"])
async def test_join_during_priority_window_is_open_to_paying_members(service: Service, level: str) -> None:
    organizer = await service.seed.user()
    member = await service.seed.user(subscription=level, subscription_expires_at=now() + timedelta(days=30))
    activity = await service.seed.activity(organizer, joinable_at_free=now() + timedelta(days=1))
    assert (await join(service, member, activity)).participation_status == pb.PARTICIPATION_STATUS_REGISTERED


async def test_join_after_priority_window_is_open_to_free_users(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, joinable_at_free=now() - timedelta(hours=1))
    assert (await join(service, user, activity)).participation_status == pb.PARTICIPATION_STATUS_REGISTERED


async def test_join_checks_run_in_contract_order(service: Service) -> None:
    """A banned user blocked with the organizer of a started activity hears about the start."""
    organizer = await service.seed.user()
    user = await service.seed.user(status="banned")
    activity = await service.seed.activity(organizer, starts_in=timedelta(minutes=-1), privacy="invite_only")
    await service.seed.block(organizer, user)
    await expect_error(join(service, user, activity), Code.FAILED_PRECONDITION, "ACTIVITY_IN_PAST")


async def test_failed_join_changes_nothing(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="friends_only")
    await expect_error(join(service, user, activity), Code.PERMISSION_DENIED, "FRIENDS_ONLY")
    counts = await service.seed.counts(activity)
    assert (counts["counter"], counts["registered"], counts["positions"]) == (1, 1, [])


@pytest.mark.parametrize(
    "activity_id",
    [
        "",
        "not-a-uuid",
        "{12345678-1234-5678-1234-567812345678}",
        "12345678123456781234567812345678",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "12345678-1234-5678-1234-5678123456789",
    ],
)
async def test_join_refuses_ids_not_in_canonical_form(service: Service, activity_id: str) -> None:
    user = await service.seed.user()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await join(service, user, activity_id)
    assert caught.value.code() == Code.INVALID_ARGUMENT
    bad_request = detail(caught.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["activity_id"]


async def test_join_accepts_upper_case_ids(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    reply = await join(service, user, str(activity).upper())
    assert reply.activity_id == str(activity)
