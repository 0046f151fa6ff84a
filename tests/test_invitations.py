"""Invitations (contract 4.5, 8): sending, answering, cancelling, expiry and the two lists."""

import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, detail, expect_error
from tests.seed import now

Code = grpc.StatusCode
EXPIRED = timedelta(hours=-1)


def send(
    service: Service,
    caller: uuid.UUID,
    activity: uuid.UUID | str,
    *users: uuid.UUID | str,
    message: str = "",
    hours: int = 0,
) -> Awaitable[pb.SendInvitationsResponse]:
    request = pb.SendInvitationsRequest(
        activity_id=str(activity), user_ids=[str(u) for u in users], message=message, expires_in_hours=hours
    )
    return service.call("SendInvitations", caller, request)


# Any: the method (Accept, Decline or CancelInvitation) is chosen by name at run time.
def answer(service: Service, method: str, caller: uuid.UUID, invitation: uuid.UUID | str) -> Awaitable[Any]:
    request = getattr(pb, f"{method}Request")(invitation_id=str(invitation))
    return service.call(method, caller, request)


def received(
    service: Service,
    caller: uuid.UUID,
    status: pb.InvitationStatus.ValueType = pb.INVITATION_STATUS_UNSPECIFIED,
    page_size: int = 0,
    page_token: str = "",
) -> Awaitable[pb.ListReceivedInvitationsResponse]:
    request = pb.ListReceivedInvitationsRequest(status=status, page_size=page_size, page_token=page_token)
    return service.call("ListReceivedInvitations", caller, request)


def sent(
    service: Service,
    caller: uuid.UUID,
    activity: uuid.UUID | None = None,
    status: pb.InvitationStatus.ValueType = pb.INVITATION_STATUS_UNSPECIFIED,
    page_size: int = 0,
    page_token: str = "",
) -> Awaitable[pb.ListSentInvitationsResponse]:
    request = pb.ListSentInvitationsRequest(
        activity_id=str(activity) if activity else "",
        status=status,
        page_size=page_size,
        page_token=page_token,
    )
    return service.call("ListSentInvitations", caller, request)


async def invite_only(service: Service, **options: Any) -> tuple[uuid.UUID, uuid.UUID]:
    """(organizer, a published invite-only activity a week ahead)."""
    organizer = await service.seed.user()
    return organizer, await service.seed.activity(organizer, privacy="invite_only", **options)


async def invited(service: Service, **options: Any) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]:
    """(organizer, invite-only activity, a guest, the guest's pending invitation)."""
    organizer, activity = await invite_only(service, **options)
    guest = await service.seed.user()
    return organizer, activity, guest, await service.seed.invitation(activity, guest, organizer)


async def invitation_status(service: Service, invitation: uuid.UUID | str) -> str:
    status: str = await service.seed.conn.fetchval(
        "SELECT status::text FROM activity.activity_invitations WHERE invitation_id = $1",
        uuid.UUID(str(invitation)),
    )
    return status


# SendInvitations


async def test_organizer_invites_users_to_invite_only_activity(service: Service) -> None:
    organizer, activity = await invite_only(service, title="Picnic")
    a, b = await service.seed.user(), await service.seed.user()
    reply = await send(service, organizer, activity, a, b, message="Come along")
    assert (reply.activity_id, list(reply.failures)) == (str(activity), [])
    assert [i.user_id for i in reply.invitations] == [str(a), str(b)]
    first = reply.invitations[0]
    assert first.status == pb.INVITATION_STATUS_PENDING
    assert (first.activity_id, first.activity_title, first.message) == (str(activity), "Picnic", "Come along")
    assert first.invited_by_user_id == str(organizer) and first.invited_by_username
    assert first.username and first.HasField("activity_scheduled_at")
    assert not first.HasField("responded_at")
    lifetime = first.expires_at.ToDatetime() - first.invited_at.ToDatetime()
    assert lifetime == timedelta(hours=72)


async def test_invitation_lifetime_follows_expires_in_hours(service: Service) -> None:
    organizer, activity = await invite_only(service)
    reply = await send(service, organizer, activity, await service.seed.user(), hours=5)
    (invitation,) = reply.invitations
    assert invitation.expires_at.ToDatetime() - invitation.invited_at.ToDatetime() == timedelta(hours=5)


async def test_co_organizer_may_invite(service: Service) -> None:
    _organizer, activity = await invite_only(service)
    co, guest = await service.seed.user(), await service.seed.user()
    await service.seed.participant(activity, co, role="co_organizer")
    reply = await send(service, co, activity, guest)
    assert reply.invitations[0].invited_by_user_id == str(co)


async def test_per_item_failures_come_back_in_request_order(service: Service) -> None:
    organizer, activity = await invite_only(service, max_participants=2)
    member, waiting, invited, blocked, fine = [await service.seed.user() for _ in range(5)]
    await service.seed.participant(activity, member)  # the activity is now full
    await service.seed.invitation(activity, waiting, organizer)
    await service.call("JoinActivity", waiting, pb.JoinActivityRequest(activity_id=str(activity)))
    await service.seed.invitation(activity, invited, organizer)
    await service.seed.block(blocked, organizer)
    unknown = uuid.uuid4()
    reply = await send(
        service, organizer, activity, organizer, unknown, blocked, member, waiting, invited, fine
    )
    assert [(f.user_id, f.reason) for f in reply.failures] == [
        (str(organizer), "CANNOT_INVITE_SELF"),
        (str(unknown), "USER_NOT_FOUND"),
        (str(blocked), "BLOCKED"),
        (str(member), "ALREADY_PARTICIPANT"),
        (str(waiting), "ALREADY_PARTICIPANT"),
        (str(invited), "ALREADY_INVITED"),
    ]
    assert [i.user_id for i in reply.invitations] == [str(fine)]


async def test_inviting_oneself_is_cannot_invite_self(service: Service) -> None:
    organizer, activity = await invite_only(service)
    reply = await send(service, organizer, activity, organizer)
    assert [f.reason for f in reply.failures] == ["CANNOT_INVITE_SELF"]


async def test_inviting_unknown_user_is_user_not_found(service: Service) -> None:
    organizer, activity = await invite_only(service)
    reply = await send(service, organizer, activity, uuid.uuid4())
    assert [f.reason for f in reply.failures] == ["USER_NOT_FOUND"]


async def test_inviting_user_blocked_with_organizer_by_co_organizer_is_blocked(service: Service) -> None:
    organizer, activity = await invite_only(service)
    co, guest = await service.seed.user(), await service.seed.user()
    await service.seed.participant(activity, co, role="co_organizer")
    await service.seed.block(organizer, guest)
    reply = await send(service, co, activity, guest)
    assert [f.reason for f in reply.failures] == ["BLOCKED"]


async def test_inviting_user_blocked_with_inviter_is_blocked(service: Service) -> None:
    _organizer, activity = await invite_only(service)
    co, guest = await service.seed.user(), await service.seed.user()
    await service.seed.participant(activity, co, role="co_organizer")
    await service.seed.block(guest, co)
    reply = await send(service, co, activity, guest)
    assert [f.reason for f in reply.failures] == ["BLOCKED"]


async def test_inviting_registered_participant_is_already_participant(service: Service) -> None:
    organizer, activity = await invite_only(service)
    member = await service.seed.user()
    await service.seed.participant(activity, member)
    reply = await send(service, organizer, activity, member)
    assert [f.reason for f in reply.failures] == ["ALREADY_PARTICIPANT"]


async def test_inviting_someone_with_live_invitation_is_already_invited(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    await send(service, organizer, activity, guest)
    reply = await send(service, organizer, activity, guest)
    assert [f.reason for f in reply.failures] == ["ALREADY_INVITED"]


async def test_send_to_missing_activity_is_activity_not_found(service: Service) -> None:
    organizer = await service.seed.user()
    await expect_error(
        send(service, organizer, uuid.uuid4(), await service.seed.user()),
        Code.NOT_FOUND,
        "ACTIVITY_NOT_FOUND",
    )


async def test_send_to_activity_caller_cannot_see_is_activity_not_found(service: Service) -> None:
    _, activity = await invite_only(service)
    stranger = await service.seed.user()
    await expect_error(
        send(service, stranger, activity, await service.seed.user()), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND"
    )


async def test_send_by_member_is_not_authorized(service: Service) -> None:
    _, activity = await invite_only(service)
    member = await service.seed.user()
    await service.seed.participant(activity, member)
    await expect_error(
        send(service, member, activity, await service.seed.user()), Code.PERMISSION_DENIED, "NOT_AUTHORIZED"
    )


async def test_send_for_draft_is_activity_not_published(service: Service) -> None:
    organizer, activity = await invite_only(service, status="draft")
    await expect_error(
        send(service, organizer, activity, await service.seed.user()),
        Code.FAILED_PRECONDITION,
        "ACTIVITY_NOT_PUBLISHED",
    )


async def test_send_for_started_activity_is_activity_in_past(service: Service) -> None:
    organizer, activity = await invite_only(service, starts_in=timedelta(hours=-2))
    await expect_error(
        send(service, organizer, activity, await service.seed.user()),
        Code.FAILED_PRECONDITION,
        "ACTIVITY_IN_PAST",
    )


async def test_send_for_public_activity_is_not_invite_only(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    await expect_error(
        send(service, organizer, activity, await service.seed.user()),
        Code.FAILED_PRECONDITION,
        "NOT_INVITE_ONLY",
    )


async def test_send_call_checks_come_in_contract_order(service: Service) -> None:
    """Not authorized beats not published, which beats started, which beats not invite-only."""
    organizer = await service.seed.user()
    member = await service.seed.user()
    activity = await service.seed.activity(organizer, status="cancelled", starts_in=timedelta(hours=-2))
    await service.seed.participant(activity, member)
    guest = await service.seed.user()
    await expect_error(send(service, member, activity, guest), Code.PERMISSION_DENIED, "NOT_AUTHORIZED")
    await expect_error(
        send(service, organizer, activity, guest), Code.FAILED_PRECONDITION, "ACTIVITY_NOT_PUBLISHED"
    )
    public_past = await service.seed.activity(organizer, starts_in=timedelta(hours=-2))
    await expect_error(
        send(service, organizer, public_past, guest), Code.FAILED_PRECONDITION, "ACTIVITY_IN_PAST"
    )


async def test_send_to_more_than_50_users_is_too_many_invitations(service: Service) -> None:
    organizer, activity = await invite_only(service)
    users = [uuid.uuid4() for _ in range(51)]
    await expect_error(
        send(service, organizer, activity, *users), Code.INVALID_ARGUMENT, "TOO_MANY_INVITATIONS"
    )


@pytest.mark.parametrize("case", ["empty", "repeated", "malformed"])
async def test_send_with_bad_user_ids_is_invalid_argument_naming_field(service: Service, case: str) -> None:
    organizer, activity = await invite_only(service)
    user = await service.seed.user()
    cases: dict[str, list[uuid.UUID | str]] = {"empty": [], "repeated": [user, user], "malformed": ["nope"]}
    users = cases[case]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(service, organizer, activity, *users)
    assert caught.value.code() == Code.INVALID_ARGUMENT
    bad_request = detail(caught.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["user_ids"]


async def test_send_with_message_over_1000_characters_is_invalid_argument(service: Service) -> None:
    organizer, activity = await invite_only(service)
    await expect_error(
        send(service, organizer, activity, await service.seed.user(), message="x" * 1001),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


@pytest.mark.parametrize("hours", [-1, 169])
async def test_send_with_lifetime_outside_range_is_invalid_argument(service: Service, hours: int) -> None:
    organizer, activity = await invite_only(service)
    await expect_error(
        send(service, organizer, activity, await service.seed.user(), hours=hours),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


# AcceptInvitation


async def test_accept_registers_invitee_and_marks_invitation_accepted(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    invitation = (await send(service, organizer, activity, guest)).invitations[0].invitation_id
    reply = await answer(service, "AcceptInvitation", guest, invitation)
    assert (reply.invitation_id, reply.activity_id) == (invitation, str(activity))
    assert reply.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    assert reply.waitlist_position == 0
    assert await invitation_status(service, invitation) == "accepted"
    counts = await service.seed.counts(activity)
    assert counts["counter"] == counts["registered"] == 2


async def test_accept_of_full_activity_waitlists_invitee(service: Service) -> None:
    _, _, guest, invitation = await invited(service, max_participants=1)
    reply = await answer(service, "AcceptInvitation", guest, invitation)
    assert (reply.participation_status, reply.waitlist_position) == (pb.PARTICIPATION_STATUS_WAITLISTED, 1)
    assert await invitation_status(service, invitation) == "accepted"


async def test_accept_of_someone_elses_invitation_is_invitation_not_found(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest, other = await service.seed.user(), await service.seed.user()
    invitation = await service.seed.invitation(activity, guest, organizer)
    info = await expect_error(
        answer(service, "AcceptInvitation", other, invitation), Code.NOT_FOUND, "INVITATION_NOT_FOUND"
    )
    assert info.metadata["invitation_id"] == str(invitation)
    await expect_error(
        answer(service, "AcceptInvitation", guest, uuid.uuid4()), Code.NOT_FOUND, "INVITATION_NOT_FOUND"
    )


async def test_accept_by_the_sender_is_not_authorized(service: Service) -> None:
    organizer, _, _, invitation = await invited(service)
    await expect_error(
        answer(service, "AcceptInvitation", organizer, invitation), Code.PERMISSION_DENIED, "NOT_AUTHORIZED"
    )


async def test_accept_of_expired_invitation_is_invitation_expired(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    invitation = await service.seed.invitation(activity, guest, organizer, expires_in=EXPIRED)
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.FAILED_PRECONDITION, "INVITATION_EXPIRED"
    )
    assert (await service.seed.counts(activity))["registered"] == 1


async def test_accept_of_cancelled_invitation_is_invitation_cancelled(service: Service) -> None:
    organizer, _, guest, invitation = await invited(service)
    await answer(service, "CancelInvitation", organizer, invitation)
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation),
        Code.FAILED_PRECONDITION,
        "INVITATION_CANCELLED",
    )


@pytest.mark.parametrize("first", ["AcceptInvitation", "DeclineInvitation"])
async def test_accept_after_answering_is_already_responded(service: Service, first: str) -> None:
    _, _, guest, invitation = await invited(service)
    await answer(service, first, guest, invitation)
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.FAILED_PRECONDITION, "ALREADY_RESPONDED"
    )


async def test_accept_after_organizer_block_placed_later_is_blocked_user(service: Service) -> None:
    organizer, _, guest, invitation = await invited(service)
    await service.seed.block(organizer, guest)
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.PERMISSION_DENIED, "BLOCKED_USER"
    )
    assert await invitation_status(service, invitation) == "pending"


async def test_accept_on_xxl_activity_still_refuses_blocked_invitee(service: Service) -> None:
    """Only joining ignores blocks on XXL activities; accepting does not (contract 4.1)."""
    organizer, _, guest, invitation = await invited(service, type_="xxl")
    await service.seed.block(guest, organizer)
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.PERMISSION_DENIED, "BLOCKED_USER"
    )


async def test_accept_by_banned_invitee_is_user_banned(service: Service) -> None:
    _, _, guest, invitation = await invited(service)
    await service.seed.conn.execute("UPDATE activity.users SET status = 'banned' WHERE user_id = $1", guest)
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.PERMISSION_DENIED, "USER_BANNED"
    )


async def test_accept_once_activity_started_is_activity_in_past(service: Service) -> None:
    _, activity, guest, invitation = await invited(service)
    await service.seed.start(activity)
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.FAILED_PRECONDITION, "ACTIVITY_IN_PAST"
    )


async def test_accept_for_unpublished_activity_is_activity_not_published(service: Service) -> None:
    _, activity, guest, invitation = await invited(service)
    await service.seed.conn.execute(
        "UPDATE activity.activities SET status = 'cancelled' WHERE activity_id = $1", activity
    )
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation),
        Code.FAILED_PRECONDITION,
        "ACTIVITY_NOT_PUBLISHED",
    )


async def test_accept_for_activity_turned_draft_is_activity_not_found(service: Service) -> None:
    _, activity, guest, invitation = await invited(service)
    await service.seed.conn.execute(
        "UPDATE activity.activities SET status = 'draft' WHERE activity_id = $1", activity
    )
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND"
    )


async def test_accept_while_already_registered_is_already_joined(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    await service.seed.participant(activity, guest)
    invitation = await service.seed.invitation(activity, guest, organizer)
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.ALREADY_EXISTS, "ALREADY_JOINED"
    )


async def test_accept_by_the_organizer_is_user_is_organizer(service: Service) -> None:
    """Only reachable with data written by other software: the service never invites them."""
    organizer, activity = await invite_only(service)
    co = await service.seed.user()
    await service.seed.participant(activity, co, role="co_organizer")
    invitation = await service.seed.invitation(activity, organizer, co)
    await expect_error(
        answer(service, "AcceptInvitation", organizer, invitation),
        Code.FAILED_PRECONDITION,
        "USER_IS_ORGANIZER",
    )


async def test_accept_in_priority_window_by_free_member_is_premium_only_period(service: Service) -> None:
    _, _, guest, invitation = await invited(service, joinable_at_free=now() + timedelta(days=1))
    await expect_error(
        answer(service, "AcceptInvitation", guest, invitation), Code.PERMISSION_DENIED, "PREMIUM_ONLY_PERIOD"
    )


async def test_join_with_expired_invitation_is_invite_only(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    await service.seed.invitation(activity, guest, organizer, expires_in=EXPIRED)
    await expect_error(
        service.call("JoinActivity", guest, pb.JoinActivityRequest(activity_id=str(activity))),
        Code.PERMISSION_DENIED,
        "INVITE_ONLY",
    )


# DeclineInvitation


async def test_decline_records_the_answer(service: Service) -> None:
    _, activity, guest, invitation = await invited(service)
    reply = await answer(service, "DeclineInvitation", guest, invitation)
    assert (reply.invitation_id, reply.activity_id) == (str(invitation), str(activity))
    (shown,) = (await received(service, guest)).invitations
    assert shown.status == pb.INVITATION_STATUS_DECLINED and shown.HasField("responded_at")


async def test_decline_of_expired_invitation_is_invitation_expired(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    invitation = await service.seed.invitation(activity, guest, organizer, expires_in=EXPIRED)
    await expect_error(
        answer(service, "DeclineInvitation", guest, invitation),
        Code.FAILED_PRECONDITION,
        "INVITATION_EXPIRED",
    )


async def test_decline_of_cancelled_invitation_is_invitation_cancelled(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    invitation = await service.seed.invitation(activity, guest, organizer, status="cancelled")
    await expect_error(
        answer(service, "DeclineInvitation", guest, invitation),
        Code.FAILED_PRECONDITION,
        "INVITATION_CANCELLED",
    )


async def test_decline_twice_is_already_responded(service: Service) -> None:
    _, _, guest, invitation = await invited(service)
    await answer(service, "DeclineInvitation", guest, invitation)
    await expect_error(
        answer(service, "DeclineInvitation", guest, invitation), Code.FAILED_PRECONDITION, "ALREADY_RESPONDED"
    )


async def test_decline_of_someone_elses_invitation_is_invitation_not_found(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest, other = await service.seed.user(), await service.seed.user()
    invitation = await service.seed.invitation(activity, guest, organizer)
    await expect_error(
        answer(service, "DeclineInvitation", other, invitation), Code.NOT_FOUND, "INVITATION_NOT_FOUND"
    )


async def test_decline_by_the_organizer_is_not_authorized(service: Service) -> None:
    organizer, _, _, invitation = await invited(service)
    await expect_error(
        answer(service, "DeclineInvitation", organizer, invitation), Code.PERMISSION_DENIED, "NOT_AUTHORIZED"
    )


# CancelInvitation


async def test_sender_cancels_and_invitee_sees_it_cancelled(service: Service) -> None:
    organizer, activity, guest, invitation = await invited(service)
    reply = await answer(service, "CancelInvitation", organizer, invitation)
    assert (reply.invitation_id, reply.activity_id) == (str(invitation), str(activity))
    assert await invitation_status(service, invitation) == "cancelled"
    (shown,) = (await received(service, guest)).invitations
    assert shown.status == pb.INVITATION_STATUS_CANCELLED


async def test_organizer_may_cancel_co_organizers_invitation(service: Service) -> None:
    organizer, activity = await invite_only(service)
    co, guest = await service.seed.user(), await service.seed.user()
    await service.seed.participant(activity, co, role="co_organizer")
    invitation = (await send(service, co, activity, guest)).invitations[0].invitation_id
    await answer(service, "CancelInvitation", organizer, invitation)
    assert await invitation_status(service, invitation) == "cancelled"


async def test_co_organizer_may_cancel_organizers_invitation(service: Service) -> None:
    organizer, activity = await invite_only(service)
    co, guest = await service.seed.user(), await service.seed.user()
    await service.seed.participant(activity, co, role="co_organizer")
    invitation = await service.seed.invitation(activity, guest, organizer)
    await answer(service, "CancelInvitation", co, invitation)
    assert await invitation_status(service, invitation) == "cancelled"


async def test_invitee_cancelling_is_not_authorized(service: Service) -> None:
    _, _, guest, invitation = await invited(service)
    await expect_error(
        answer(service, "CancelInvitation", guest, invitation), Code.PERMISSION_DENIED, "NOT_AUTHORIZED"
    )


async def test_stranger_cancelling_is_invitation_not_found(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest, stranger, member = [await service.seed.user() for _ in range(3)]
    await service.seed.participant(activity, member)
    invitation = await service.seed.invitation(activity, guest, organizer)
    for caller in (stranger, member):
        await expect_error(
            answer(service, "CancelInvitation", caller, invitation), Code.NOT_FOUND, "INVITATION_NOT_FOUND"
        )
    await expect_error(
        answer(service, "CancelInvitation", organizer, uuid.uuid4()), Code.NOT_FOUND, "INVITATION_NOT_FOUND"
    )


@pytest.mark.parametrize(
    ("status", "expires_in", "reason"),
    [
        ("accepted", timedelta(hours=72), "ALREADY_RESPONDED"),
        ("declined", timedelta(hours=72), "ALREADY_RESPONDED"),
        ("cancelled", timedelta(hours=72), "INVITATION_CANCELLED"),
        ("pending", EXPIRED, "INVITATION_EXPIRED"),
    ],
)
async def test_cancel_of_closed_invitation_is_refused(
    service: Service, status: str, expires_in: timedelta, reason: str
) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    invitation = await service.seed.invitation(
        activity, guest, organizer, status=status, expires_in=expires_in
    )
    await expect_error(
        answer(service, "CancelInvitation", organizer, invitation), Code.FAILED_PRECONDITION, reason
    )


# Expiry and re-invitation


async def test_expired_invitation_shows_expired_and_the_filter_finds_it(service: Service) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    stale = await service.seed.invitation(activity, guest, organizer, expires_in=EXPIRED)
    other_activity = await service.seed.activity(organizer, privacy="invite_only")
    live = await service.seed.invitation(other_activity, guest, organizer)
    everything = await received(service, guest)
    statuses = {i.invitation_id: i.status for i in everything.invitations}
    assert statuses == {str(stale): pb.INVITATION_STATUS_EXPIRED, str(live): pb.INVITATION_STATUS_PENDING}
    expired = await received(service, guest, status=pb.INVITATION_STATUS_EXPIRED)
    assert [i.invitation_id for i in expired.invitations] == [str(stale)]
    pending = await received(service, guest, status=pb.INVITATION_STATUS_PENDING)
    assert [i.invitation_id for i in pending.invitations] == [str(live)]
    by_sender = await sent(service, organizer, status=pb.INVITATION_STATUS_EXPIRED)
    assert [i.invitation_id for i in by_sender.invitations] == [str(stale)]


@pytest.mark.parametrize(
    ("status", "expires_in"),
    [("declined", timedelta(hours=72)), ("cancelled", timedelta(hours=72)), ("pending", EXPIRED)],
)
async def test_reinvite_after_decline_expiry_or_cancel_creates_a_new_invitation(
    service: Service, status: str, expires_in: timedelta
) -> None:
    organizer, activity = await invite_only(service)
    guest = await service.seed.user()
    old = await service.seed.invitation(activity, guest, organizer, status=status, expires_in=expires_in)
    reply = await send(service, organizer, activity, guest)
    assert list(reply.failures) == []
    (new,) = reply.invitations
    assert new.invitation_id != str(old) and new.status == pb.INVITATION_STATUS_PENDING
    shown = {i.invitation_id: i.status for i in (await received(service, guest)).invitations}
    assert shown[str(old)] != pb.INVITATION_STATUS_PENDING
    accepted = await answer(service, "AcceptInvitation", guest, new.invitation_id)
    assert accepted.participation_status == pb.PARTICIPATION_STATUS_REGISTERED


# The two lists


async def test_received_invitations_page_newest_first_with_tokens(service: Service) -> None:
    organizer = await service.seed.user()
    guest = await service.seed.user()
    ids = []
    for _ in range(5):
        activity = await service.seed.activity(organizer, privacy="invite_only")
        ids.append((await send(service, organizer, activity, guest)).invitations[0].invitation_id)
    seen, token, pages = [], "", 0
    while True:
        reply = await received(service, guest, page_size=2, page_token=token)
        assert reply.total_size == 5
        seen += [i.invitation_id for i in reply.invitations]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert (seen, pages) == (ids[::-1], 3)
    await expect_error(
        received(
            service,
            guest,
            status=pb.INVITATION_STATUS_PENDING,
            page_token=(await received(service, guest, page_size=2)).next_page_token,
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_sent_invitations_filter_by_activity(service: Service) -> None:
    organizer, first = await invite_only(service)
    second = await service.seed.activity(organizer, privacy="invite_only")
    a, b = await service.seed.user(), await service.seed.user()
    await send(service, organizer, first, a, b)
    await send(service, organizer, second, a)
    reply = await sent(service, organizer, activity=first)
    assert reply.total_size == 2
    assert {i.user_id for i in reply.invitations} == {str(a), str(b)}
    assert (await sent(service, organizer)).total_size == 3
    assert (await sent(service, a)).total_size == 0


async def test_invitation_lists_hide_users_blocked_with_the_caller(service: Service) -> None:
    _organizer, activity = await invite_only(service)
    co, guest, foe = [await service.seed.user() for _ in range(3)]
    await service.seed.participant(activity, co, role="co_organizer")
    await send(service, co, activity, guest, foe)
    await service.seed.block(foe, co)
    assert [i.user_id for i in (await sent(service, co)).invitations] == [str(guest)]
    assert (await sent(service, co)).total_size == 1
    assert (await received(service, foe)).total_size == 0


async def test_invitation_lists_of_caller_without_user_record_are_empty(service: Service) -> None:
    ghost = uuid.uuid4()
    for reply in (await received(service, ghost), await sent(service, ghost)):
        assert (list(reply.invitations), reply.total_size, reply.next_page_token) == ([], 0, "")


async def test_received_invitations_with_unknown_status_is_invalid_argument(service: Service) -> None:
    unknown = pb.InvitationStatus.ValueType(99)  # no such status: the service must refuse it
    await expect_error(
        received(service, await service.seed.user(), status=unknown),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_sent_invitations_with_malformed_activity_is_invalid_argument(service: Service) -> None:
    request = pb.ListSentInvitationsRequest(activity_id="nope")
    await expect_error(
        service.call("ListSentInvitations", await service.seed.user(), request),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_received_invitations_leave_out_activities_the_invitee_cannot_see(service: Service) -> None:
    organizer, activity = await invite_only(service)
    co, guest = await service.seed.user(), await service.seed.user()
    await service.seed.participant(activity, co, role="co_organizer")
    await send(service, co, activity, guest)
    await service.seed.block(organizer, guest)
    assert (await received(service, guest)).total_size == 0
    assert (await sent(service, co)).total_size == 1
