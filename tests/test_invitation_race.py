"""AcceptInvitation and JoinActivity racing for the last seats (one lock decides them all)."""

import asyncio

import grpc

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service
from tests.participation import invariants

SETTLED = {
    grpc.StatusCode.ALREADY_EXISTS: "ALREADY_JOINED",
    grpc.StatusCode.FAILED_PRECONDITION: "ALREADY_RESPONDED",
}


async def test_accept_racing_join_never_exceeds_capacity(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only", max_participants=3)
    guests = [await service.seed.user() for _ in range(30)]
    invitations = [await service.seed.invitation(activity, g, organizer) for g in guests]
    join = pb.JoinActivityRequest(activity_id=str(activity))
    # Every guest both accepts and joins at once: exactly one of the two may win.
    calls = [
        call
        for guest, invitation in zip(guests, invitations, strict=True)
        for call in (
            service.call(
                "AcceptInvitation", guest, pb.AcceptInvitationRequest(invitation_id=str(invitation))
            ),
            service.call("JoinActivity", guest, join),
        )
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(f, grpc.aio.AioRpcError) and f.code() in SETTLED for f in failures)
    assert len(failures) == len(guests)  # one winner per guest
    counts = await invariants(service, activity)
    assert (counts["registered"], counts["wait_counter"]) == (3, 28)
    places = await service.seed.conn.fetchval(
        "SELECT count(DISTINCT user_id) FROM (SELECT user_id FROM activity.participants "
        "WHERE activity_id = $1 AND participation_status = 'registered' UNION ALL "
        "SELECT user_id FROM activity.waitlist_entries WHERE activity_id = $1) x",
        activity,
    )
    assert places == 31
    pending = await service.seed.conn.fetchval(
        "SELECT count(*) FROM activity.activity_invitations WHERE activity_id = $1 AND status <> 'accepted'",
        activity,
    )
    assert pending == 0


async def test_accepts_racing_for_one_seat_seat_one_and_queue_the_rest(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, privacy="invite_only", max_participants=2)
    guests = [await service.seed.user() for _ in range(20)]
    invitations = [await service.seed.invitation(activity, g, organizer) for g in guests]
    replies = await asyncio.gather(
        *(
            service.call("AcceptInvitation", g, pb.AcceptInvitationRequest(invitation_id=str(i)))
            for g, i in zip(guests, invitations, strict=True)
        )
    )
    statuses = [r.participation_status for r in replies]
    assert statuses.count(pb.PARTICIPATION_STATUS_REGISTERED) == 1
    assert sorted(r.waitlist_position for r in replies if r.waitlist_position) == list(range(1, 20))
    await invariants(service, activity)
