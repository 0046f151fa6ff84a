"""WatchActivity from the client's side: open a stream, take events from it, describe them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service

# A guard against a test hanging, never a measure of speed: events normally arrive at once.
DEADLINE_SECONDS = 60.0
_TYPE = pb.ParticipationEventType


def watch(service: Service, activity: uuid.UUID, user: uuid.UUID, after_sequence: int | None = None) -> Any:
    request = pb.WatchActivityRequest(activity_id=str(activity))
    if after_sequence is not None:
        request.after_sequence = after_sequence
    return service.stub.WatchActivity(request, metadata=service.auth(user))


async def take(stream: Any, count: int) -> list[pb.ActivityEvent]:
    """The next `count` events of an open stream (the stream stays open)."""

    async def read() -> list[pb.ActivityEvent]:
        return [await stream.read() for _ in range(count)]

    events = await asyncio.wait_for(read(), DEADLINE_SECONDS)
    assert grpc.aio.EOF not in events, "the stream ended early"
    return events


async def replay(service: Service, activity: uuid.UUID, user: uuid.UUID) -> list[pb.ActivityEvent]:
    """Every stored event of the activity as `user` sees them (from sequence 0, up to the last)."""
    last = await service.seed.conn.fetchval(
        "SELECT coalesce(max(sequence), 0) FROM activity.participation_events WHERE activity_id = $1",
        activity,
    )
    stream = watch(service, activity, user, after_sequence=0)
    try:
        events: list[pb.ActivityEvent] = []
        while not events or events[-1].sequence < last:
            events += await take(stream, 1)
        return events
    finally:
        stream.cancel()


def described(event: pb.ActivityEvent) -> tuple[Any, ...]:
    """An event as (type label, user, actor, and what its type carries)."""
    label = _TYPE.Name(event.event_type).removeprefix("PARTICIPATION_EVENT_TYPE_")
    extra: Any = None
    if event.event_type == pb.PARTICIPATION_EVENT_TYPE_WAITLISTED:
        extra = event.waitlist_position
    elif event.event_type == pb.PARTICIPATION_EVENT_TYPE_ROLE_CHANGED:
        extra = pb.ParticipantRole.Name(event.role)
    elif event.event_type == pb.PARTICIPATION_EVENT_TYPE_ATTENDANCE_MARKED:
        extra = pb.AttendanceStatus.Name(event.attendance_status)
    elif event.invitation_id:
        extra = event.invitation_id
    return (label, event.user_id, event.actor_user_id or None, extra)


async def ended(stream: Any) -> grpc.aio.AioRpcError:
    """Reads on until the stream fails; returns its error (events before it are dropped)."""

    async def read_to_error() -> grpc.aio.AioRpcError:
        while True:
            try:
                if await stream.read() is grpc.aio.EOF:
                    raise AssertionError("the stream ended without an error")
            except grpc.aio.AioRpcError as exc:
                return exc

    return await asyncio.wait_for(read_to_error(), DEADLINE_SECONDS)
