"""LeaveActivity and CancelParticipation: who may, the waitlist moving up, exact counters."""

import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, expect_error
from tests.participation import cancel, full_activity, invariants, join, leave

Code = grpc.StatusCode


async def test_leave_frees_seat_for_first_waitlisted(service: Service) -> None:
    activity, _, members, queue = await full_activity(service, seats=3, waiting=3)
    reply = await leave(service, members[0], activity)
    assert reply.was_waitlisted is False
    assert list(reply.promoted_user_ids) == [str(queue[0])]
    assert reply.HasField("left_at")
    counts = await invariants(service, activity)
    assert (counts["registered"], counts["positions"]) == (3, [1, 2])


async def test_leave_from_middle_of_waitlist_moves_no_other_entry(service: Service) -> None:
    """Contract 7: the stored positions keep the gap (one row written), callers still see 1..n."""
    activity, organizer, _, queue = await full_activity(service, seats=2, waiting=4)
    before = await service.seed.conn.fetch(
        "SELECT user_id, position, xmin::text AS version FROM activity.waitlist_entries "
        "WHERE activity_id = $1 ORDER BY position",
        activity,
    )
    reply = await leave(service, queue[1], activity)
    assert reply.was_waitlisted is True and list(reply.promoted_user_ids) == []
    await invariants(service, activity)
    after = await service.seed.conn.fetch(
        "SELECT user_id, position, xmin::text AS version FROM activity.waitlist_entries "
        "WHERE activity_id = $1 ORDER BY position",
        activity,
    )
    assert [tuple(r) for r in after] == [tuple(r) for i, r in enumerate(before) if i != 1]
    shown = await service.call("ListWaitlist", organizer, pb.ListWaitlistRequest(activity_id=str(activity)))
    assert [(e.user_id, e.position) for e in shown.entries] == [
        (str(queue[0]), 1),
        (str(queue[2]), 2),
        (str(queue[3]), 3),
    ]


async def test_promotion_fills_every_free_seat(service: Service) -> None:
    """Seats freed behind the service's back (capacity raised) are all filled at the next leave."""
    activity, _, members, queue = await full_activity(service, seats=2, waiting=4)
    await service.seed.conn.execute(
        "UPDATE activity.activities SET max_participants = 4 WHERE activity_id = $1", activity
    )
    reply = await leave(service, members[0], activity)
    assert list(reply.promoted_user_ids) == [str(u) for u in queue[:3]]
    counts = await invariants(service, activity)
    assert (counts["registered"], counts["positions"]) == (4, [1])


async def test_promotion_drops_banned_and_blocked_waitlisted_users(service: Service) -> None:
    activity, organizer, members, queue = await full_activity(service, seats=2, waiting=3)
    await service.seed.conn.execute(
        "UPDATE activity.users SET status = 'banned' WHERE user_id = $1", queue[0]
    )
    await service.seed.block(organizer, queue[1])
    reply = await leave(service, members[0], activity)
    assert list(reply.promoted_user_ids) == [str(queue[2])]
    counts = await invariants(service, activity)
    assert (counts["registered"], counts["positions"]) == (2, [])


async def test_promotion_on_xxl_activity_keeps_blocked_users(service: Service) -> None:
    organizer, member, blocked = [await service.seed.user() for _ in range(3)]
    activity = await service.seed.activity(organizer, type_="xxl", max_participants=2)
    await join(service, member, activity)
    await join(service, blocked, activity)
    await service.seed.block(blocked, organizer)
    reply = await leave(service, member, activity)
    assert list(reply.promoted_user_ids) == [str(blocked)]


async def test_leave_then_join_again_goes_through_every_check(service: Service) -> None:
    activity, _, members, _ = await full_activity(service, seats=2, waiting=1)
    await leave(service, members[0], activity)
    again = await join(service, members[0], activity)
    assert again.participation_status == pb.PARTICIPATION_STATUS_WAITLISTED
    assert again.waitlist_position == 1
    await invariants(service, activity)


async def test_leave_missing_activity_is_not_found(service: Service) -> None:
    user = await service.seed.user()
    await expect_error(leave(service, user, uuid.uuid4()), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_leave_invisible_activity_is_not_found_rather_than_not_participant(service: Service) -> None:
    organizer, outsider = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only")
    await expect_error(leave(service, outsider, activity), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_leave_by_organizer_is_refused(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    await expect_error(leave(service, organizer, activity), Code.FAILED_PRECONDITION, "IS_ORGANIZER")


async def test_leave_after_start_is_refused(service: Service) -> None:
    organizer, member = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await join(service, member, activity)
    await service.seed.start(activity)
    await expect_error(leave(service, member, activity), Code.FAILED_PRECONDITION, "ACTIVITY_IN_PAST")


async def test_leave_without_participation_is_not_participant(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    info = await expect_error(leave(service, user, activity), Code.FAILED_PRECONDITION, "NOT_PARTICIPANT")
    assert info.metadata["activity_id"] == str(activity)


async def test_leave_after_cancelling_is_not_participant(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await join(service, user, activity)
    await cancel(service, user, activity)
    await expect_error(leave(service, user, activity), Code.FAILED_PRECONDITION, "NOT_PARTICIPANT")


async def test_participant_blocked_later_by_organizer_can_still_leave(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await join(service, user, activity)
    await service.seed.block(organizer, user)
    assert (await leave(service, user, activity)).user_id == str(user)


async def test_cancel_keeps_record_with_reason_and_promotes(service: Service) -> None:
    activity, _, members, queue = await full_activity(service, seats=2, waiting=2)
    reply = await cancel(service, members[0], activity, reason="Sick, sorry")
    assert reply.participation_status == pb.PARTICIPATION_STATUS_CANCELLED
    assert list(reply.promoted_user_ids) == [str(queue[0])]
    assert reply.HasField("cancelled_at")
    row = await service.seed.fetchrow(
        "SELECT participation_status::text, cancellation_reason, cancelled_at FROM "
        "activity.participants WHERE activity_id = $1 AND user_id = $2",
        activity,
        members[0],
    )
    assert (row["participation_status"], row["cancellation_reason"]) == ("cancelled", "Sick, sorry")
    await invariants(service, activity)


async def test_cancel_then_join_again_reactivates_the_record(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await join(service, user, activity)
    await cancel(service, user, activity, reason="later")
    again = await join(service, user, activity)
    assert again.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    row = await service.seed.fetchrow(
        "SELECT participation_status::text, cancellation_reason FROM activity.participants "
        "WHERE activity_id = $1 AND user_id = $2",
        activity,
        user,
    )
    assert (row["participation_status"], row["cancellation_reason"]) == ("registered", None)


async def test_cancel_reason_over_500_characters_is_invalid(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await join(service, user, activity)
    await expect_error(
        cancel(service, user, activity, reason="x" * 501), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    assert (
        await cancel(service, user, activity, reason="é" * 500)
    ).participation_status == pb.PARTICIPATION_STATUS_CANCELLED


async def test_cancel_twice_is_already_cancelled(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await join(service, user, activity)
    await cancel(service, user, activity)
    await expect_error(cancel(service, user, activity), Code.FAILED_PRECONDITION, "ALREADY_CANCELLED")


async def test_cancel_while_waitlisted_is_not_participant(service: Service) -> None:
    activity, _, _, queue = await full_activity(service, seats=1, waiting=1)
    await expect_error(cancel(service, queue[0], activity), Code.FAILED_PRECONDITION, "NOT_PARTICIPANT")


async def test_cancelled_user_back_on_waitlist_is_waitlisted_not_cancelled(service: Service) -> None:
    activity, _, members, _ = await full_activity(service, seats=2, waiting=0)
    await cancel(service, members[0], activity)
    other = await service.seed.user()
    await join(service, other, activity)
    assert (
        await join(service, members[0], activity)
    ).participation_status == pb.PARTICIPATION_STATUS_WAITLISTED
    await expect_error(cancel(service, members[0], activity), Code.FAILED_PRECONDITION, "NOT_PARTICIPANT")


@pytest.mark.parametrize("rpc", [cancel, leave])
async def test_cancel_and_leave_by_organizer_are_refused(
    service: Service, rpc: Callable[[Service, uuid.UUID, uuid.UUID], Awaitable[object]]
) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer)
    await expect_error(rpc(service, organizer, activity), Code.FAILED_PRECONDITION, "IS_ORGANIZER")


async def test_cancel_missing_activity_is_not_found(service: Service) -> None:
    user = await service.seed.user()
    await expect_error(cancel(service, user, uuid.uuid4()), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_cancel_after_start_is_refused(service: Service) -> None:
    organizer, member = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await join(service, member, activity)
    await service.seed.start(activity)
    await expect_error(cancel(service, member, activity), Code.FAILED_PRECONDITION, "ACTIVITY_IN_PAST")


async def test_cancel_without_participation_is_not_participant(service: Service) -> None:
    organizer, user = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await expect_error(cancel(service, user, activity), Code.FAILED_PRECONDITION, "NOT_PARTICIPANT")
