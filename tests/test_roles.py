"""PromoteParticipant and DemoteParticipant (contract 4.1, 4.4): organizer authority only."""

import uuid
from collections.abc import Awaitable

import grpc
import pytest
from google.rpc import error_details_pb2

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service, detail, expect_error

Code = grpc.StatusCode


def promote(
    service: Service, caller: uuid.UUID, activity: uuid.UUID, user: uuid.UUID | str
) -> Awaitable[pb.PromoteParticipantResponse]:
    request = pb.PromoteParticipantRequest(activity_id=str(activity), user_id=str(user))
    return service.call("PromoteParticipant", caller, request)


def demote(
    service: Service, caller: uuid.UUID, activity: uuid.UUID, user: uuid.UUID
) -> Awaitable[pb.DemoteParticipantResponse]:
    request = pb.DemoteParticipantRequest(activity_id=str(activity), user_id=str(user))
    return service.call("DemoteParticipant", caller, request)


async def setup(service: Service) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(organizer, member, activity)."""
    organizer, member = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer)
    await service.seed.participant(activity, member)
    return organizer, member, activity


async def role_of(service: Service, activity: uuid.UUID, user: uuid.UUID) -> str:
    role: str = await service.seed.conn.fetchval(
        "SELECT role::text FROM activity.participants WHERE activity_id = $1 AND user_id = $2", activity, user
    )
    return role


async def test_organizer_promotes_member_to_co_organizer(service: Service) -> None:
    organizer, member, activity = await setup(service)
    reply = await promote(service, organizer, activity, member)
    assert (reply.activity_id, reply.user_id) == (str(activity), str(member))
    assert reply.role == pb.PARTICIPANT_ROLE_CO_ORGANIZER
    assert await role_of(service, activity, member) == "co_organizer"


async def test_organizer_demotes_co_organizer_to_member(service: Service) -> None:
    organizer, member, activity = await setup(service)
    await promote(service, organizer, activity, member)
    reply = await demote(service, organizer, activity, member)
    assert reply.role == pb.PARTICIPANT_ROLE_MEMBER
    assert await role_of(service, activity, member) == "member"


async def test_promote_on_missing_activity_is_activity_not_found(service: Service) -> None:
    organizer, member, _ = await setup(service)
    missing = uuid.uuid4()
    info = await expect_error(
        promote(service, organizer, missing, member), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND"
    )
    assert info.metadata["activity_id"] == str(missing)


async def test_promote_on_activity_caller_cannot_see_is_activity_not_found(service: Service) -> None:
    organizer, stranger, member = [await service.seed.user() for _ in range(3)]
    activity = await service.seed.activity(organizer, privacy="invite_only")
    await service.seed.participant(activity, member)
    await expect_error(promote(service, stranger, activity, member), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_promote_by_co_organizer_is_not_organizer(service: Service) -> None:
    organizer, member, activity = await setup(service)
    other = await service.seed.user()
    await service.seed.participant(activity, other)
    await promote(service, organizer, activity, member)
    await expect_error(promote(service, member, activity, other), Code.PERMISSION_DENIED, "NOT_ORGANIZER")


async def test_promote_by_member_is_not_organizer(service: Service) -> None:
    _, member, activity = await setup(service)
    await expect_error(promote(service, member, activity, member), Code.PERMISSION_DENIED, "NOT_ORGANIZER")


async def test_organizer_role_row_without_organizer_id_gives_no_authority(service: Service) -> None:
    """Authority comes from activities.organizer_user_id, never from a participants role."""
    _organizer, member, activity = await setup(service)
    impostor = await service.seed.user()
    await service.seed.participant(activity, impostor, role="organizer")
    await expect_error(promote(service, impostor, activity, member), Code.PERMISSION_DENIED, "NOT_ORGANIZER")


async def test_promote_of_organizer_is_target_not_member(service: Service) -> None:
    organizer, _, activity = await setup(service)
    info = await expect_error(
        promote(service, organizer, activity, organizer), Code.FAILED_PRECONDITION, "TARGET_NOT_MEMBER"
    )
    assert info.metadata["user_id"] == str(organizer)


@pytest.mark.parametrize("status", ["cancelled", "declined"])
async def test_promote_of_non_registered_participant_is_target_not_member(
    service: Service, status: str
) -> None:
    organizer, _, activity = await setup(service)
    former = await service.seed.user()
    await service.seed.participant(activity, former, status=status)
    await expect_error(
        promote(service, organizer, activity, former), Code.FAILED_PRECONDITION, "TARGET_NOT_MEMBER"
    )


async def test_promote_of_waitlisted_user_is_target_not_member(service: Service) -> None:
    organizer = await service.seed.user()
    activity = await service.seed.activity(organizer, max_participants=1)
    waiting = await service.seed.user()
    await service.call("JoinActivity", waiting, pb.JoinActivityRequest(activity_id=str(activity)))
    await expect_error(
        promote(service, organizer, activity, waiting), Code.FAILED_PRECONDITION, "TARGET_NOT_MEMBER"
    )


async def test_promote_of_stranger_is_target_not_member(service: Service) -> None:
    organizer, _, activity = await setup(service)
    await expect_error(
        promote(service, organizer, activity, uuid.uuid4()), Code.FAILED_PRECONDITION, "TARGET_NOT_MEMBER"
    )


async def test_promote_of_co_organizer_is_already_co_organizer(service: Service) -> None:
    organizer, member, activity = await setup(service)
    await promote(service, organizer, activity, member)
    await expect_error(
        promote(service, organizer, activity, member), Code.ALREADY_EXISTS, "ALREADY_CO_ORGANIZER"
    )


@pytest.mark.parametrize("member_blocks", [True, False])
async def test_promote_member_blocked_with_organizer_is_refused(
    service: Service, member_blocks: bool
) -> None:
    organizer, member, activity = await setup(service)
    if member_blocks:
        await service.seed.block(member, organizer)
    else:
        await service.seed.block(organizer, member)
    await expect_error(promote(service, organizer, activity, member), Code.PERMISSION_DENIED, "BLOCKED_USER")
    assert await role_of(service, activity, member) == "member"


async def test_promote_member_blocked_with_organizer_is_refused_on_xxl_too(service: Service) -> None:
    organizer, member = await service.seed.user(), await service.seed.user()
    activity = await service.seed.activity(organizer, type_="xxl")
    await service.seed.participant(activity, member)
    await service.seed.block(organizer, member)
    await expect_error(promote(service, organizer, activity, member), Code.PERMISSION_DENIED, "BLOCKED_USER")


async def test_demote_of_member_is_not_co_organizer(service: Service) -> None:
    organizer, member, activity = await setup(service)
    await expect_error(
        demote(service, organizer, activity, member), Code.FAILED_PRECONDITION, "NOT_CO_ORGANIZER"
    )


async def test_demote_of_cancelled_co_organizer_is_not_co_organizer(service: Service) -> None:
    organizer, _, activity = await setup(service)
    former = await service.seed.user()
    await service.seed.participant(activity, former, role="co_organizer", status="cancelled")
    await expect_error(
        demote(service, organizer, activity, former), Code.FAILED_PRECONDITION, "NOT_CO_ORGANIZER"
    )


async def test_demote_by_co_organizer_is_not_organizer(service: Service) -> None:
    organizer, member, activity = await setup(service)
    other = await service.seed.user()
    await service.seed.participant(activity, other, role="co_organizer")
    await promote(service, organizer, activity, member)
    await expect_error(demote(service, member, activity, other), Code.PERMISSION_DENIED, "NOT_ORGANIZER")


async def test_demote_on_missing_activity_is_activity_not_found(service: Service) -> None:
    organizer, member, _ = await setup(service)
    await expect_error(demote(service, organizer, uuid.uuid4(), member), Code.NOT_FOUND, "ACTIVITY_NOT_FOUND")


async def test_promote_malformed_user_id_is_invalid_argument_naming_field(service: Service) -> None:
    organizer, _, activity = await setup(service)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await promote(service, organizer, activity, "nope")
    assert caught.value.code() == Code.INVALID_ARGUMENT
    bad_request = detail(caught.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["user_id"]


async def test_co_organizer_appears_after_organizer_in_participant_list(service: Service) -> None:
    organizer, member, activity = await setup(service)
    late = await service.seed.user()
    await service.seed.participant(activity, late)
    await promote(service, organizer, activity, late)
    reply = await service.call(
        "ListParticipants", organizer, pb.ListParticipantsRequest(activity_id=str(activity))
    )
    assert [p.user_id for p in reply.participants] == [str(organizer), str(late), str(member)]
    assert reply.participants[1].role == pb.PARTICIPANT_ROLE_CO_ORGANIZER
