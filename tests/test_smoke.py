"""The first call through the running server."""

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service


async def test_join_public_activity_registers_caller(service: Service) -> None:
    organizer = await service.seed.user()
    joiner = await service.seed.user()
    activity = await service.seed.activity(organizer)
    reply = await service.call("JoinActivity", joiner, pb.JoinActivityRequest(activity_id=str(activity)))
    assert reply.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
    assert reply.role == pb.PARTICIPANT_ROLE_MEMBER
    assert reply.user_id == str(joiner)
