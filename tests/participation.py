"""What many tests do and check: join, leave, cancel, a full activity, the invariants."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any, NamedTuple

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service


def join(service: Service, user: uuid.UUID, activity: uuid.UUID | str) -> Awaitable[pb.JoinActivityResponse]:
    return service.call("JoinActivity", user, pb.JoinActivityRequest(activity_id=str(activity)))


def leave(service: Service, user: uuid.UUID, activity: uuid.UUID) -> Awaitable[pb.LeaveActivityResponse]:
    return service.call("LeaveActivity", user, pb.LeaveActivityRequest(activity_id=str(activity)))


def cancel(
    service: Service, user: uuid.UUID, activity: uuid.UUID, reason: str = ""
) -> Awaitable[pb.CancelParticipationResponse]:
    return service.call(
        "CancelParticipation", user, pb.CancelParticipationRequest(activity_id=str(activity), reason=reason)
    )


class FullActivity(NamedTuple):
    activity: uuid.UUID
    organizer: uuid.UUID
    members: list[uuid.UUID]  # joined through the service, in order
    queue: list[uuid.UUID]  # waitlisted, in queue order


async def full_activity(
    service: Service,
    waiting: int,
    *,
    seats: int | None = None,
    seated: tuple[uuid.UUID, ...] = (),
    **options: Any,
) -> FullActivity:
    """An activity with every seat taken (the organizer's, those of `seated`, written as the
    platform would, and members who joined through the service for the rest of `seats`), then
    `waiting` users queued through the service."""
    organizer = await service.seed.user()
    seats = 1 + len(seated) if seats is None else seats
    activity = await service.seed.activity(organizer, max_participants=seats, **options)
    for user in seated:
        await service.seed.participant(activity, user)
    members = [await service.seed.user() for _ in range(seats - 1 - len(seated))]
    queue = [await service.seed.user() for _ in range(waiting)]
    for user in members + queue:
        await join(service, user, activity)
    return FullActivity(activity, organizer, members, queue)


async def invariants(service: Service, activity: uuid.UUID) -> dict[str, Any]:
    """Counters equal the rows, capacity holds, positions are 1..n, nobody is in two places."""
    counts = await service.seed.counts(activity)
    assert counts["counter"] == counts["registered"] <= counts["max_participants"]
    assert counts["wait_counter"] == len(counts["positions"])
    assert counts["positions"] == list(range(1, len(counts["positions"]) + 1))
    both = await service.seed.conn.fetchval(
        "SELECT count(*) FROM activity.waitlist_entries w JOIN activity.participants p "
        "USING (activity_id, user_id) WHERE w.activity_id = $1 "
        "AND p.participation_status = 'registered'",
        activity,
    )
    assert both == 0
    return counts
