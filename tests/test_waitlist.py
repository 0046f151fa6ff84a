"""ListWaitlist (contract 2, 4.3): organizer and co-organizers only, queue order, stable paging."""

import uuid
from collections.abc import Awaitable

import grpc

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, expect_error
from tests.participation import full_activity

Code = grpc.StatusCode


def waitlist(
    service: Service, caller: uuid.UUID, activity: uuid.UUID, page_size: int = 0, page_token: str = ""
) -> Awaitable[pb.ListWaitlistResponse]:
    request = pb.ListWaitlistRequest(activity_id=str(activity), page_size=page_size, page_token=page_token)
    return service.call("ListWaitlist", caller, request)


async def test_organizer_sees_waitlist_in_queue_order(service: Service) -> None:
    activity, organizer, _, users = await full_activity(service, 3)
    reply = await waitlist(service, organizer, activity)
    assert [(e.user_id, e.position) for e in reply.entries] == [
        (str(u), n) for n, u in enumerate(users, start=1)
    ]
    assert (reply.total_size, reply.next_page_token) == (3, "")
    first = reply.entries[0]
    assert first.username and first.first_name == "Test" and first.profile_photo_url
    assert first.HasField("joined_at")


async def test_co_organizer_sees_waitlist(service: Service) -> None:
    co = await service.seed.user()
    activity, _, _, _ = await full_activity(service, 2, seated=(co,))
    await service.seed.conn.execute(
        "UPDATE activity.participants SET role = 'co_organizer' WHERE user_id = $1", co
    )
    assert (await waitlist(service, co, activity)).total_size == 2


async def test_waitlist_for_member_is_not_authorized(service: Service) -> None:
    member = await service.seed.user()
    activity, _, _, (waiting, _) = await full_activity(service, 2, seated=(member,))
    for caller in (member, waiting):
        info = await expect_error(
            waitlist(service, caller, activity), Code.PERMISSION_DENIED, "NOT_AUTHORIZED"
        )
        assert info.metadata["activity_id"] == str(activity)


async def test_waitlist_for_cancelled_co_organizer_is_not_authorized(service: Service) -> None:
    activity, _, _, _ = await full_activity(service, 1)
    former = await service.seed.user()
    await service.seed.participant(activity, former, role="co_organizer", status="cancelled")
    await expect_error(waitlist(service, former, activity), Code.PERMISSION_DENIED, "NOT_AUTHORIZED")


async def test_waitlist_of_activity_caller_cannot_see_is_activity_not_found(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only")
    stranger = await service.seed.user()
    await expect_error(waitlist(service, stranger, activity), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")
    await expect_error(waitlist(service, organizer, uuid.uuid4()), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_waitlist_never_shows_users_blocked_with_the_caller(service: Service) -> None:
    activity, organizer, _, (first, second, third) = await full_activity(service, 3, type_="xxl")
    await service.seed.block(second, organizer)  # XXL: the block did not stop the join
    reply = await waitlist(service, organizer, activity)
    assert [(e.user_id, e.position) for e in reply.entries] == [(str(first), 1), (str(third), 3)]
    assert reply.total_size == 2


async def test_waitlist_pages_default_to_50_with_tokens(service: Service) -> None:
    activity, organizer, _, users = await full_activity(service, 55)
    first = await waitlist(service, organizer, activity)
    assert (len(first.entries), first.total_size) == (50, 55) and first.next_page_token
    second = await waitlist(service, organizer, activity, page_token=first.next_page_token)
    assert [e.position for e in second.entries] == [51, 52, 53, 54, 55]
    assert second.next_page_token == ""
    assert [e.user_id for e in [*first.entries, *second.entries]] == [str(u) for u in users]


async def test_waitlist_page_continues_after_last_row_when_someone_ahead_leaves(service: Service) -> None:
    activity, organizer, _, users = await full_activity(service, 6)
    first = await waitlist(service, organizer, activity, page_size=3)
    await service.call("LeaveActivity", users[0], pb.LeaveActivityRequest(activity_id=str(activity)))
    second = await waitlist(service, organizer, activity, page_size=3, page_token=first.next_page_token)
    assert [e.user_id for e in second.entries] == [str(u) for u in users[3:]]
    assert [e.position for e in second.entries] == [3, 4, 5]
    assert second.total_size == 5


async def test_waitlist_token_from_another_activity_is_invalid_argument(service: Service) -> None:
    activity, organizer, _, _ = await full_activity(service, 3)
    other = await service.seed.activity(organizer)
    token = (await waitlist(service, organizer, activity, page_size=1)).next_page_token
    await expect_error(
        waitlist(service, organizer, other, page_token=token), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    await expect_error(
        waitlist(service, organizer, activity, page_size=-1), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
