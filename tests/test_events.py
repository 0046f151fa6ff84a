"""Every event type, written by the procedure behind a real RPC, read back through WatchActivity:
who, by whom, what it carries, in the order of contract 9; failed calls write nothing."""

from __future__ import annotations

import uuid

import grpc

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, expect_error
from tests.watching import described, replay

ATTENDED = pb.ATTENDANCE_STATUS_ATTENDED


async def test_joining_leaving_the_waitlist_and_roles_write_their_events_in_order(service: Service) -> None:
    seed = service.seed
    organizer = await seed.user()
    a, b, c, d = [await seed.user() for _ in range(4)]
    activity = await seed.activity(organizer, max_participants=2)
    on = {"activity_id": str(activity)}
    for user in (a, b, c, d):
        await service.call("JoinActivity", user, pb.JoinActivityRequest(**on))
    await expect_error(
        service.call("JoinActivity", a, pb.JoinActivityRequest(**on)),
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_JOINED",
    )
    await service.call("LeaveActivity", c, pb.LeaveActivityRequest(**on))
    await seed.conn.execute("UPDATE activity.users SET status = 'banned' WHERE user_id = $1", b)
    role = pb.PromoteParticipantRequest(**on, user_id=str(a))
    await service.call("PromoteParticipant", organizer, role)
    await service.call("DemoteParticipant", organizer, pb.DemoteParticipantRequest(**on, user_id=str(a)))
    cancelled = await service.call(
        "CancelParticipation", a, pb.CancelParticipationRequest(**on, reason="ill")
    )
    assert list(cancelled.promoted_user_ids) == [str(d)]
    await service.call("LeaveActivity", d, pb.LeaveActivityRequest(**on))

    events = await replay(service, activity, organizer)
    assert [e.sequence for e in events] == list(range(1, 12))  # the failed join used none
    a_, b_, c_, d_, o_ = map(str, (a, b, c, d, organizer))
    assert [described(e) for e in events] == [
        ("JOINED", a_, a_, None),
        ("WAITLISTED", b_, b_, 1),
        ("WAITLISTED", c_, c_, 2),
        ("WAITLISTED", d_, d_, 3),
        ("LEFT_WAITLIST", c_, c_, None),
        ("ROLE_CHANGED", a_, o_, "PARTICIPANT_ROLE_CO_ORGANIZER"),
        ("ROLE_CHANGED", a_, o_, "PARTICIPANT_ROLE_MEMBER"),
        ("CANCELLED", a_, a_, None),
        ("DROPPED_FROM_WAITLIST", b_, None, None),  # banned while waiting
        ("PROMOTED", d_, None, None),
        ("LEFT", d_, d_, None),
    ]
    assert {e.activity_id for e in events} == {str(activity)}
    times = [e.occurred_at.ToDatetime() for e in events]
    assert times == sorted(times)
    assert len({e.event_id for e in events}) == 11


async def test_a_leave_that_frees_three_seats_writes_left_then_three_promoted_in_queue_order(
    service: Service,
) -> None:
    seed = service.seed
    organizer = await seed.user()
    a, b, c, d, e = [await seed.user() for _ in range(5)]
    activity = await seed.activity(organizer, max_participants=2)
    on = {"activity_id": str(activity)}
    for user in (a, b, c, d, e):
        await service.call("JoinActivity", user, pb.JoinActivityRequest(**on))
    # The activity service (not this one) raises the capacity: no event, and nobody moves up
    # until a change of participation fills the seats.
    await seed.conn.execute(
        "UPDATE activity.activities SET max_participants = 4 WHERE activity_id = $1", activity
    )
    left = await service.call("LeaveActivity", a, pb.LeaveActivityRequest(**on))
    assert list(left.promoted_user_ids) == [str(b), str(c), str(d)]

    a_, b_, c_, d_, e_ = map(str, (a, b, c, d, e))
    assert [described(event) for event in await replay(service, activity, organizer)] == [
        ("JOINED", a_, a_, None),
        ("WAITLISTED", b_, b_, 1),
        ("WAITLISTED", c_, c_, 2),
        ("WAITLISTED", d_, d_, 3),
        ("WAITLISTED", e_, e_, 4),
        ("LEFT", a_, a_, None),
        ("PROMOTED", b_, None, None),
        ("PROMOTED", c_, None, None),
        ("PROMOTED", d_, None, None),
    ]


async def test_invitations_write_their_events_and_accepting_joins_after_it(service: Service) -> None:
    seed = service.seed
    organizer = await seed.user()
    a, b, c = [await seed.user() for _ in range(3)]
    activity = await seed.activity(organizer, privacy="invite_only")
    sent = await service.call(
        "SendInvitations",
        organizer,
        pb.SendInvitationsRequest(
            activity_id=str(activity), user_ids=[str(a), str(b), str(c), str(organizer)]
        ),
    )
    ids = {i.user_id: i.invitation_id for i in sent.invitations}
    assert len(sent.failures) == 1  # inviting oneself: a per-item failure, no event
    await service.call("AcceptInvitation", a, pb.AcceptInvitationRequest(invitation_id=ids[str(a)]))
    await service.call("DeclineInvitation", b, pb.DeclineInvitationRequest(invitation_id=ids[str(b)]))
    await expect_error(
        service.call("AcceptInvitation", b, pb.AcceptInvitationRequest(invitation_id=ids[str(b)])),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ALREADY_RESPONDED",
    )
    await service.call("CancelInvitation", organizer, pb.CancelInvitationRequest(invitation_id=ids[str(c)]))

    a_, b_, c_, o_ = map(str, (a, b, c, organizer))
    assert [described(e) for e in await replay(service, activity, organizer)] == [
        ("INVITED", a_, o_, ids[a_]),
        ("INVITED", b_, o_, ids[b_]),
        ("INVITED", c_, o_, ids[c_]),
        ("INVITATION_ACCEPTED", a_, a_, ids[a_]),
        ("JOINED", a_, a_, None),
        ("INVITATION_DECLINED", b_, b_, ids[b_]),
        ("INVITATION_CANCELLED", c_, o_, ids[c_]),
    ]


async def test_joining_an_invite_only_activity_accepts_the_invitation_first(service: Service) -> None:
    seed = service.seed
    organizer, guest = await seed.user(), await seed.user()
    activity = await seed.activity(organizer, privacy="invite_only", max_participants=1)
    invitation = await seed.invitation(activity, guest, organizer)
    await service.call("JoinActivity", guest, pb.JoinActivityRequest(activity_id=str(activity)))
    g_ = str(guest)
    assert [described(e) for e in await replay(service, activity, organizer)] == [
        ("INVITATION_ACCEPTED", g_, g_, str(invitation)),
        ("WAITLISTED", g_, g_, 1),
    ]


async def test_attendance_writes_an_event_per_change_and_confirmations_name_the_confirmer(
    service: Service,
) -> None:
    seed = service.seed
    organizer, a, b = await seed.user(), await seed.user(), await seed.user()
    activity = await seed.activity(organizer)
    for user in (a, b):
        await seed.participant(activity, user)
    await seed.start(activity)
    marks = [pb.AttendanceEntry(user_id=str(u), status=ATTENDED) for u in (a, b)]
    stranger = pb.AttendanceEntry(user_id=str(uuid.uuid4()), status=ATTENDED)
    reply = await service.call(
        "MarkAttendance",
        organizer,
        pb.MarkAttendanceRequest(activity_id=str(activity), entries=[*marks, stranger]),
    )
    assert reply.updated_count == 2 and len(reply.failures) == 1
    # Marked the same again: nothing changes, nothing is written.
    await service.call(
        "MarkAttendance", organizer, pb.MarkAttendanceRequest(activity_id=str(activity), entries=marks[:1])
    )
    await service.call(
        "ConfirmAttendance", a, pb.ConfirmAttendanceRequest(activity_id=str(activity), user_id=str(b))
    )
    await expect_error(
        service.call(
            "ConfirmAttendance", a, pb.ConfirmAttendanceRequest(activity_id=str(activity), user_id=str(b))
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_CONFIRMED",
    )

    a_, b_, o_ = map(str, (a, b, organizer))
    assert [described(e) for e in await replay(service, activity, organizer)] == [
        ("ATTENDANCE_MARKED", a_, o_, "ATTENDANCE_STATUS_ATTENDED"),
        ("ATTENDANCE_MARKED", b_, o_, "ATTENDANCE_STATUS_ATTENDED"),
        ("ATTENDANCE_CONFIRMED", b_, a_, None),
    ]


async def test_a_platform_tool_calling_a_procedure_directly_writes_the_event_too(service: Service) -> None:
    seed = service.seed
    organizer, user = await seed.user(), await seed.user()
    activity = await seed.activity(organizer)
    await seed.conn.execute("SELECT * FROM activity.sp_join_activity($1, $2)", activity, user)
    assert [described(e) for e in await replay(service, activity, organizer)] == [
        ("JOINED", str(user), str(user), None)
    ]
