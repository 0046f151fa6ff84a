"""ParticipationService: who is calling, which procedure, which message comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from participation_grpc import procedures
from participation_grpc.auth import current_caller
from participation_grpc.convert import to_message
from participation_grpc.db import Database
from participation_grpc.paging import PageTokens, page_size
from participation_grpc.procedures import Page
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc as pb_grpc
from participation_grpc.validation import (
    bounded_list,
    enum_field,
    int_range,
    max_length,
    optional_uuid,
    required_enum,
    unique_ids,
    uuid_field,
)
from participation_grpc.watch import Watchers

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)
_STATUS = pb.ParticipationStatus.DESCRIPTOR
_ROLE = pb.ParticipantRole.DESCRIPTOR
_FILTER = pb.UserActivityFilter.DESCRIPTOR
_ATTENDANCE = pb.AttendanceStatus.DESCRIPTOR
_INVITATION = pb.InvitationStatus.DESCRIPTOR
_MARKS = ("attended", "no_show")
_MAX_SEQUENCE = 2**63 - 1


class ParticipationServicer(pb_grpc.ParticipationServiceServicer):
    def __init__(self, db: Database, tokens: PageTokens, watchers: Watchers) -> None:
        self._db = db
        self._tokens = tokens
        self._watchers = watchers

    async def JoinActivity(
        self, request: pb.JoinActivityRequest, context: Context
    ) -> pb.JoinActivityResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.join_activity(self._db, activity_id, caller.user_id, request_id)
        return to_message(pb.JoinActivityResponse, row)

    async def LeaveActivity(
        self, request: pb.LeaveActivityRequest, context: Context
    ) -> pb.LeaveActivityResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.leave_activity(self._db, activity_id, caller.user_id, request_id)
        return to_message(pb.LeaveActivityResponse, row)

    async def CancelParticipation(
        self, request: pb.CancelParticipationRequest, context: Context
    ) -> pb.CancelParticipationResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        reason = max_length(request.reason, "reason", 500)
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.cancel_participation(
            self._db, activity_id, caller.user_id, reason or None, request_id
        )
        return to_message(pb.CancelParticipationResponse, row)

    async def ListParticipants(
        self, request: pb.ListParticipantsRequest, context: Context
    ) -> pb.ListParticipantsResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        status = enum_field(
            _STATUS, request.participation_status, "participation_status", allowed=("registered", "cancelled")
        )
        role = enum_field(_ROLE, request.role, "role")
        size, after, binding = self._paging(request)
        page = await procedures.list_participants(
            self._db, activity_id, caller.user_id, status, role, size, after
        )
        return self._page_reply(pb.ListParticipantsResponse, page, binding)

    async def ListUserActivities(
        self, request: pb.ListUserActivitiesRequest, context: Context
    ) -> pb.ListUserActivitiesResponse:
        caller = current_caller.get()
        user_id = optional_uuid(request.user_id, "user_id") or caller.user_id
        filter_ = enum_field(_FILTER, request.filter, "filter")
        status = enum_field(_STATUS, request.participation_status, "participation_status")
        size, after, binding = self._paging(request)
        page = await procedures.get_user_activities(
            self._db, user_id, caller.user_id, filter_, status, size, after
        )
        return self._page_reply(pb.ListUserActivitiesResponse, page, binding)

    async def PromoteParticipant(
        self, request: pb.PromoteParticipantRequest, context: Context
    ) -> pb.PromoteParticipantResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        user_id = uuid_field(request.user_id, "user_id")
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.promote_participant(self._db, activity_id, user_id, caller.user_id, request_id)
        return to_message(pb.PromoteParticipantResponse, row)

    async def DemoteParticipant(
        self, request: pb.DemoteParticipantRequest, context: Context
    ) -> pb.DemoteParticipantResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        user_id = uuid_field(request.user_id, "user_id")
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.demote_participant(self._db, activity_id, user_id, caller.user_id, request_id)
        return to_message(pb.DemoteParticipantResponse, row)

    async def MarkAttendance(
        self, request: pb.MarkAttendanceRequest, context: Context
    ) -> pb.MarkAttendanceResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        entries = bounded_list(request.entries, "entries", 100, "TOO_MANY_UPDATES")
        user_ids = unique_ids((e.user_id for e in entries), "entries")
        statuses = [required_enum(_ATTENDANCE, e.status, "entries.status", _MARKS) for e in entries]
        request_id = optional_uuid(request.request_id, "request_id")
        result = await procedures.mark_attendance(
            self._db, activity_id, caller.user_id, list(zip(user_ids, statuses, strict=True)), request_id
        )
        return to_message(pb.MarkAttendanceResponse, result)

    async def ConfirmAttendance(
        self, request: pb.ConfirmAttendanceRequest, context: Context
    ) -> pb.ConfirmAttendanceResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        user_id = uuid_field(request.user_id, "user_id")
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.confirm_attendance(self._db, activity_id, user_id, caller.user_id, request_id)
        return to_message(pb.ConfirmAttendanceResponse, row)

    async def ListPendingVerifications(
        self, request: pb.ListPendingVerificationsRequest, context: Context
    ) -> pb.ListPendingVerificationsResponse:
        caller = current_caller.get()
        size, after, binding = self._paging(request)
        page = await procedures.get_pending_verifications(self._db, caller.user_id, size, after)
        return self._page_reply(pb.ListPendingVerificationsResponse, page, binding)

    async def SendInvitations(
        self, request: pb.SendInvitationsRequest, context: Context
    ) -> pb.SendInvitationsResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        invitees = bounded_list(request.user_ids, "user_ids", 50, "TOO_MANY_INVITATIONS")
        user_ids = unique_ids(invitees, "user_ids")
        message = max_length(request.message, "message", 1000)
        hours = int_range(request.expires_in_hours, "expires_in_hours", 0, 168)  # 0: the default
        request_id = optional_uuid(request.request_id, "request_id")
        result = await procedures.send_invitations(
            self._db, activity_id, caller.user_id, user_ids, message or None, hours, request_id
        )
        return to_message(pb.SendInvitationsResponse, result)

    async def AcceptInvitation(
        self, request: pb.AcceptInvitationRequest, context: Context
    ) -> pb.AcceptInvitationResponse:
        caller = current_caller.get()
        invitation_id = uuid_field(request.invitation_id, "invitation_id")
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.accept_invitation(self._db, invitation_id, caller.user_id, request_id)
        return to_message(pb.AcceptInvitationResponse, row)

    async def DeclineInvitation(
        self, request: pb.DeclineInvitationRequest, context: Context
    ) -> pb.DeclineInvitationResponse:
        caller = current_caller.get()
        invitation_id = uuid_field(request.invitation_id, "invitation_id")
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.decline_invitation(self._db, invitation_id, caller.user_id, request_id)
        return to_message(pb.DeclineInvitationResponse, row)

    async def CancelInvitation(
        self, request: pb.CancelInvitationRequest, context: Context
    ) -> pb.CancelInvitationResponse:
        caller = current_caller.get()
        invitation_id = uuid_field(request.invitation_id, "invitation_id")
        request_id = optional_uuid(request.request_id, "request_id")
        row = await procedures.cancel_invitation(self._db, invitation_id, caller.user_id, request_id)
        return to_message(pb.CancelInvitationResponse, row)

    async def ListReceivedInvitations(
        self, request: pb.ListReceivedInvitationsRequest, context: Context
    ) -> pb.ListReceivedInvitationsResponse:
        caller = current_caller.get()
        status = enum_field(_INVITATION, request.status, "status")
        size, after, binding = self._paging(request)
        page = await procedures.get_received_invitations(self._db, caller.user_id, status, size, after)
        return self._page_reply(pb.ListReceivedInvitationsResponse, page, binding)

    async def ListSentInvitations(
        self, request: pb.ListSentInvitationsRequest, context: Context
    ) -> pb.ListSentInvitationsResponse:
        caller = current_caller.get()
        activity_id = optional_uuid(request.activity_id, "activity_id")
        status = enum_field(_INVITATION, request.status, "status")
        size, after, binding = self._paging(request)
        page = await procedures.get_sent_invitations(
            self._db, caller.user_id, activity_id, status, size, after
        )
        return self._page_reply(pb.ListSentInvitationsResponse, page, binding)

    async def ListWaitlist(
        self, request: pb.ListWaitlistRequest, context: Context
    ) -> pb.ListWaitlistResponse:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        size, after, binding = self._paging(request)
        page = await procedures.get_waitlist(self._db, activity_id, caller.user_id, size, after)
        return self._page_reply(pb.ListWaitlistResponse, page, binding)

    async def WatchActivity(
        self, request: pb.WatchActivityRequest, context: Context
    ) -> AsyncIterator[pb.ActivityEvent]:
        caller = current_caller.get()
        activity_id = uuid_field(request.activity_id, "activity_id")
        after = (
            int_range(request.after_sequence, "after_sequence", 0, _MAX_SEQUENCE)
            if request.HasField("after_sequence")
            else None
        )
        async for event in self._watchers.stream(activity_id, caller.user_id, after):
            yield to_message(pb.ActivityEvent, event)

    def _page_reply(self, response: type[R], page: Page, binding: str) -> R:
        """A list response: the page's items (already in their message's JSON shape) in its one
        repeated field, then the paging fields."""
        return response(
            **{
                _items_field(response): page.items,
                "total_size": page.total_size,
                "next_page_token": self._tokens.encode(page.next_after, binding),
            }
        )

    def _paging(self, request: Any) -> tuple[int, dict[str, Any] | None, str]:
        """Page size (0: the list's default, decided by its procedure), where to continue, and
        the binding any next token must carry."""
        binding = self._tokens.binding(current_caller.get().user_id, request)
        return (page_size(request.page_size), self._tokens.decode(request.page_token, binding), binding)


def _items_field(response: type[Message]) -> str:
    return _repeated_field(response.DESCRIPTOR)


@cache
def _repeated_field(descriptor: Descriptor) -> str:
    name: str = next(f.name for f in descriptor.fields if f.is_repeated)
    return name
