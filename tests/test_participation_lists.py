"""ListParticipants and ListUserActivities: visibility, blocks, order, filters and paging."""

import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, detail, expect_error
from tests.participation import join

Code = grpc.StatusCode


def participants(
    service: Service, user: uuid.UUID, activity: uuid.UUID, **fields: Any
) -> Awaitable[pb.ListParticipantsResponse]:
    return service.call(
        "ListParticipants", user, pb.ListParticipantsRequest(activity_id=str(activity), **fields)
    )


def history(service: Service, user: uuid.UUID, **fields: Any) -> Awaitable[pb.ListUserActivitiesResponse]:
    return service.call("ListUserActivities", user, pb.ListUserActivitiesRequest(**fields))


async def test_participants_are_listed_organizer_then_co_organizers_then_members(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    members = [await service.seed.user() for _ in range(3)]
    for user in members:
        await join(service, user, activity)
    await service.seed.conn.execute(
        "UPDATE activity.participants SET role = 'co_organizer' WHERE user_id = $1", members[2]
    )
    reply = await participants(service, members[0], activity)
    assert [p.user_id for p in reply.participants] == [
        str(u) for u in (organizer, members[2], members[0], members[1])
    ]
    assert [p.role for p in reply.participants] == [
        pb.PARTICIPANT_ROLE_ORGANIZER,
        pb.PARTICIPANT_ROLE_CO_ORGANIZER,
        pb.PARTICIPANT_ROLE_MEMBER,
        pb.PARTICIPANT_ROLE_MEMBER,
    ]
    first = reply.participants[0]
    assert first.username and first.first_name == "Test" and first.last_name == "Tester"
    assert first.profile_photo_url.startswith("https://")
    assert first.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    assert first.attendance_status == pb.ATTENDANCE_STATUS_REGISTERED
    assert reply.total_size == 4 and reply.next_page_token == ""


async def test_participants_role_and_cancelled_filters(service: Service) -> None:
    organizer, stays, goes = [await service.seed.user() for _ in range(3)]
    activity = await service.seed.activity(organizer)
    await join(service, stays, activity)
    await join(service, goes, activity)
    await service.call("CancelParticipation", goes, pb.CancelParticipationRequest(activity_id=str(activity)))
    cancelled = await participants(
        service, stays, activity, participation_status=pb.PARTICIPATION_STATUS_CANCELLED
    )
    assert [p.user_id for p in cancelled.participants] == [str(goes)]
    members = await participants(service, stays, activity, role=pb.PARTICIPANT_ROLE_MEMBER)
    assert [p.user_id for p in members.participants] == [str(stays)]


async def test_participants_waitlisted_filter_is_invalid(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await participants(
            service, organizer, activity, participation_status=pb.PARTICIPATION_STATUS_WAITLISTED
        )
    assert caught.value.code() == Code.INVALID_ARGUMENT
    violations = detail(caught.value, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["participation_status"]


async def test_participants_of_unknown_enum_value_is_invalid(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    await expect_error(
        participants(service, organizer, activity, role=42), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )


async def test_participants_never_show_users_blocked_with_caller(service: Service) -> None:
    organizer, caller, blocker, blocked = [await service.seed.user() for _ in range(4)]
    activity = await service.seed.activity(organizer, type_="xxl")
    for user in (caller, blocker, blocked):
        await join(service, user, activity)
    await service.seed.block(blocker, caller)
    await service.seed.block(caller, blocked)
    reply = await participants(service, caller, activity)
    assert {p.user_id for p in reply.participants} == {str(organizer), str(caller)}
    assert reply.total_size == 2


@pytest.mark.parametrize("privacy", ["invite_only", "friends_only"])
async def test_private_participant_list_is_reported_as_missing_to_outsiders(
    service: Service, privacy: str
) -> None:
    organizer, outsider = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy=privacy)
    info = await expect_error(participants(service, outsider, activity), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")
    assert info.metadata["activity_id"] == str(activity)


async def test_friends_only_list_is_visible_to_friends_and_invite_only_to_invitees(service: Service) -> None:
    organizer, friend, invitee = [await service.seed.user() for _ in range(3)]
    friends_only = await service.seed.activity(organizer, privacy="friends_only")
    invite_only = await service.seed.activity(organizer, privacy="invite_only")
    await service.seed.friends(organizer, friend)
    await service.seed.invitation(invite_only, invitee, organizer)
    assert (await participants(service, friend, friends_only)).total_size == 1
    assert (await participants(service, invitee, invite_only)).total_size == 1


async def test_participant_list_hidden_from_user_blocked_with_organizer(service: Service) -> None:
    organizer, blocked = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await service.seed.block(organizer, blocked)
    await expect_error(participants(service, blocked, activity), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_draft_participants_visible_to_its_organizer_only(service: Service) -> None:
    organizer, other = await service.seed.user(), await service.seed.user()
    draft = await service.seed.activity(organizer, status="draft")
    assert (await participants(service, organizer, draft)).total_size == 1
    await expect_error(participants(service, other, draft), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_participants_page_through_every_row_once_with_keyset_tokens(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=20)
    for _ in range(11):
        await join(service, await service.seed.user(), activity)
    first = await participants(service, organizer, activity, page_size=5)
    assert (len(first.participants), first.total_size) == (5, 12)
    # A user joining between pages sorts last: no row shifts, repeats or goes missing.
    late = await service.seed.user()
    await join(service, late, activity)
    second = await participants(service, organizer, activity, page_size=5, page_token=first.next_page_token)
    third = await participants(service, organizer, activity, page_size=5, page_token=second.next_page_token)
    assert third.next_page_token == "" and third.total_size == 13
    seen = [p.user_id for page in (first, second, third) for p in page.participants]
    everyone = await participants(service, organizer, activity, page_size=100)
    assert seen == [p.user_id for p in everyone.participants]
    assert len(seen) == 13 and seen[-1] == str(late)


async def test_page_token_is_bound_to_its_request(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    for _ in range(3):
        await join(service, await service.seed.user(), activity)
    token = (await participants(service, organizer, activity, page_size=2)).next_page_token
    assert token
    await expect_error(
        participants(
            service, organizer, activity, page_size=2, page_token=token, role=pb.PARTICIPANT_ROLE_MEMBER
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    second = await participants(service, organizer, activity, page_size=10, page_token=token)
    assert len(second.participants) == 2 and second.next_page_token == ""


@pytest.mark.parametrize("token", ["garbage", "eyJhIjp7fX0.AAAA", "a.b.c", "ü"])
async def test_page_token_not_issued_by_service_is_invalid(service: Service, token: str) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await participants(service, organizer, activity, page_token=token)
    assert caught.value.code() == Code.INVALID_ARGUMENT
    violations = detail(caught.value, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["page_token"]


async def test_negative_page_size_is_invalid_and_large_is_capped(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await participants(service, organizer, activity, page_size=-1)
    violations = detail(caught.value, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["page_size"]
    assert (await participants(service, organizer, activity, page_size=100000)).total_size == 1


async def test_own_history_shows_registered_waitlisted_and_cancelled(service: Service) -> None:
    organizer, me, other = [await service.seed.user() for _ in range(3)]
    registered = await service.seed.activity(organizer, starts_in=timedelta(days=1))
    full = await service.seed.activity(organizer, max_participants=2, starts_in=timedelta(days=2))
    dropped = await service.seed.activity(organizer, starts_in=timedelta(days=3))
    await join(service, other, full)
    for activity in (registered, full, dropped):
        await join(service, me, activity)
    await service.call("CancelParticipation", me, pb.CancelParticipationRequest(activity_id=str(dropped)))
    reply = await history(service, me)
    by_id = {a.activity_id: a for a in reply.activities}
    assert reply.total_size == 3
    assert by_id[str(registered)].participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    assert by_id[str(full)].participation_status == pb.PARTICIPATION_STATUS_WAITLISTED
    assert by_id[str(full)].waitlist_position == 1
    assert by_id[str(dropped)].participation_status == pb.PARTICIPATION_STATUS_CANCELLED
    shown = by_id[str(registered)]
    assert shown.organizer_user_id == str(organizer) and shown.organizer_username
    assert shown.activity_type == pb.ACTIVITY_TYPE_STANDARD and shown.max_participants == 10
    assert shown.current_participants_count == 2 and shown.city == "Amsterdam"
    # Everything but UPCOMING runs latest first.
    assert [a.activity_id for a in reply.activities] == [str(dropped), str(full), str(registered)]


async def test_upcoming_runs_soonest_first_and_past_latest_first(service: Service) -> None:
    organizer = await service.seed.user()
    later = await service.seed.activity(organizer, starts_in=timedelta(days=9))
    sooner = await service.seed.activity(organizer, starts_in=timedelta(days=1))
    old = await service.seed.activity(organizer, starts_in=timedelta(days=-3))
    older = await service.seed.activity(organizer, starts_in=timedelta(days=-9))
    upcoming = await history(service, organizer, filter=pb.USER_ACTIVITY_FILTER_UPCOMING)
    assert [a.activity_id for a in upcoming.activities] == [str(sooner), str(later)]
    past = await history(service, organizer, filter=pb.USER_ACTIVITY_FILTER_PAST)
    assert [a.activity_id for a in past.activities] == [str(old), str(older)]


async def test_organized_filter_excludes_co_organized(service: Service) -> None:
    organizer, co = await service.seed.user(), await service.seed.user()
    mine = await service.seed.activity(co)
    theirs = await service.seed.activity(organizer)
    await join(service, co, theirs)
    await service.seed.conn.execute(
        "UPDATE activity.participants SET role = 'co_organizer' WHERE user_id = $1 AND activity_id = $2",
        co,
        theirs,
    )
    reply = await history(service, co, filter=pb.USER_ACTIVITY_FILTER_ORGANIZED)
    assert [a.activity_id for a in reply.activities] == [str(mine)]


async def test_attended_filter_and_status_filter(service: Service) -> None:
    organizer, me = await service.seed.user(), await service.seed.user()
    went = await service.seed.activity(organizer, starts_in=timedelta(days=5))
    skipped = await service.seed.activity(organizer, starts_in=timedelta(days=6))
    for activity in (went, skipped):
        await join(service, me, activity)
    await service.seed.conn.execute(
        "UPDATE activity.participants SET attendance_status = 'attended' WHERE user_id = $1 "
        "AND activity_id = $2",
        me,
        went,
    )
    attended = await history(service, me, filter=pb.USER_ACTIVITY_FILTER_ATTENDED)
    assert [a.activity_id for a in attended.activities] == [str(went)]
    assert attended.activities[0].attendance_status == pb.ATTENDANCE_STATUS_ATTENDED
    waitlisted = await history(service, me, participation_status=pb.PARTICIPATION_STATUS_WAITLISTED)
    assert waitlisted.total_size == 0


async def test_another_users_history_shows_only_registered_in_visible_activities(service: Service) -> None:
    organizer, them, me, filler = [await service.seed.user() for _ in range(4)]
    public = await service.seed.activity(organizer)
    secret = await service.seed.activity(organizer, privacy="invite_only")
    full = await service.seed.activity(organizer, max_participants=2)
    await service.seed.invitation(secret, them, organizer)
    await join(service, them, public)
    await join(service, them, secret)
    await join(service, filler, full)
    await join(service, them, full)  # waitlisted: private to them
    reply = await history(service, me, user_id=str(them))
    assert [a.activity_id for a in reply.activities] == [str(public)]
    assert reply.total_size == 1


async def test_history_of_blocked_or_unknown_user_is_user_not_found(service: Service) -> None:
    me, blocker = await service.seed.user(), await service.seed.user()
    await service.seed.block(blocker, me)
    for target in (blocker, uuid.uuid4()):
        info = await expect_error(history(service, me, user_id=str(target)), Code.NOT_FOUND, "USER_NOT_FOUND")
        assert info.metadata["user_id"] == str(target)


async def test_own_history_without_user_record_is_an_empty_page(service: Service) -> None:
    reply = await history(service, uuid.uuid4())
    assert (len(reply.activities), reply.total_size, reply.next_page_token) == (0, 0, "")


@pytest.mark.parametrize(
    "filter_,order", [(pb.USER_ACTIVITY_FILTER_UPCOMING, 1), (pb.USER_ACTIVITY_FILTER_UNSPECIFIED, -1)]
)
async def test_history_pages_with_keyset_tokens(service: Service, filter_: int, order: int) -> None:
    organizer = await service.seed.user()
    made = [await service.seed.activity(organizer, starts_in=timedelta(days=d)) for d in range(1, 8)]
    seen: list[str] = []
    token = ""
    while True:
        reply = await history(service, organizer, filter=filter_, page_size=3, page_token=token)
        assert reply.total_size == 7
        seen += [a.activity_id for a in reply.activities]
        token = reply.next_page_token
        if not token:
            break
    assert seen == [str(a) for a in made][::order]


async def test_history_of_malformed_user_id_is_invalid(service: Service) -> None:
    me = await service.seed.user()
    await expect_error(history(service, me, user_id="123"), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT")
