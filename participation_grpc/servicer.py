"""ParticipationService: who is calling, which procedure, which message comes back."""

from __future__ import annotations

from typing import Any

import grpc

from participation_grpc import procedures
from participation_grpc.auth import current_caller
from participation_grpc.convert import to_message
from participation_grpc.db import Database
from participation_grpc.paging import PageTokens, page_size
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc as pb_grpc
from participation_grpc.validation import enum_field, max_length, optional_uuid, uuid_field

Context = grpc.aio.ServicerContext
_STATUS = pb.ParticipationStatus.DESCRIPTOR
_ROLE = pb.ParticipantRole.DESCRIPTOR
_FILTER = pb.UserActivityFilter.DESCRIPTOR


class ParticipationServicer(pb_grpc.ParticipationServiceServicer):
    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self._db = db
        self._tokens = tokens

    async def JoinActivity(self, request: pb.JoinActivityRequest, context: Context
                           ) -> pb.JoinActivityResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        row = await procedures.join_activity(self._db, activity_id, caller.user_id)
        return to_message(pb.JoinActivityResponse, row)

    async def LeaveActivity(self, request: pb.LeaveActivityRequest, context: Context
                            ) -> pb.LeaveActivityResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        row = await procedures.leave_activity(self._db, activity_id, caller.user_id)
        return to_message(pb.LeaveActivityResponse, row)

    async def CancelParticipation(self, request: pb.CancelParticipationRequest, context: Context
                                  ) -> pb.CancelParticipationResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        reason = max_length(request.reason, "reason", 500)
        row = await procedures.cancel_participation(self._db, activity_id, caller.user_id,
                                                    reason or None)
        return to_message(pb.CancelParticipationResponse, row)

    async def ListParticipants(self, request: pb.ListParticipantsRequest, context: Context
                               ) -> pb.ListParticipantsResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        status = enum_field(_STATUS, request.participation_status, "participation_status",
                            allowed=("registered", "cancelled"))
        role = enum_field(_ROLE, request.role, "role")
        size, after, binding = self._paging(request, default_size=50)
        page = await procedures.list_participants(self._db, activity_id, caller.user_id, status,
                                                  role, size, after)
        return pb.ListParticipantsResponse(
            participants=[to_message(pb.Participant, item) for item in page.items],
            next_page_token=self._tokens.encode(page.next_after, binding),
            total_size=page.total_size)

    async def ListUserActivities(self, request: pb.ListUserActivitiesRequest, context: Context
                                 ) -> pb.ListUserActivitiesResponse:
        caller = current_caller.get()
        user_id = optional_uuid(request.user_id, "user_id") or caller.user_id
        filter_ = enum_field(_FILTER, request.filter, "filter")
        status = enum_field(_STATUS, request.participation_status, "participation_status")
        size, after, binding = self._paging(request, default_size=20)
        page = await procedures.get_user_activities(self._db, user_id, caller.user_id, filter_,
                                                    status, size, after)
        return pb.ListUserActivitiesResponse(
            activities=[to_message(pb.UserActivity, item) for item in page.items],
            next_page_token=self._tokens.encode(page.next_after, binding),
            total_size=page.total_size)

    def _paging(self, request: Any, default_size: int) -> tuple[int, dict[str, Any] | None, str]:
        """Page size, where to continue, and the binding any next token must carry."""
        binding = self._tokens.binding(current_caller.get().user_id, request)
        return (page_size(request.page_size, default_size),
                self._tokens.decode(request.page_token, binding), binding)
