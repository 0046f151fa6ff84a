"""One typed function per stored procedure: the only SQL text outside the migrations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from participation_grpc.db import Database


@dataclass(frozen=True)
class Page:
    """One page of a list procedure: rows as dicts, and the keyset position to continue after."""

    total_size: int
    items: list[dict[str, Any]]
    next_after: dict[str, Any] | None


def _page(row: asyncpg.Record) -> Page:
    return Page(total_size=row["total_size"], items=row["items"], next_after=row["next_after"])


async def join_activity(
    db: Database, activity_id: UUID, user_id: UUID, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_join_activity($1, $2, $3)", activity_id, user_id, request_id
    )


async def leave_activity(
    db: Database, activity_id: UUID, user_id: UUID, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_leave_activity($1, $2, $3)", activity_id, user_id, request_id
    )


async def cancel_participation(
    db: Database, activity_id: UUID, user_id: UUID, reason: str | None, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_cancel_participation($1, $2, $3, $4)",
        activity_id,
        user_id,
        reason,
        request_id,
    )


async def list_participants(
    db: Database,
    activity_id: UUID,
    user_id: UUID,
    status: str | None,
    role: str | None,
    page_size: int,
    after: dict[str, Any] | None,
) -> Page:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_list_participants($1, $2, $3, $4, $5, $6::jsonb)",
        activity_id,
        user_id,
        status,
        role,
        page_size,
        after,
    )
    return _page(row)


async def get_user_activities(
    db: Database,
    user_id: UUID,
    caller_id: UUID,
    filter_: str | None,
    status: str | None,
    page_size: int,
    after: dict[str, Any] | None,
) -> Page:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_get_user_activities($1, $2, $3, $4, $5, $6::jsonb)",
        user_id,
        caller_id,
        filter_,
        status,
        page_size,
        after,
    )
    return _page(row)


async def promote_participant(
    db: Database, activity_id: UUID, user_id: UUID, acting_user_id: UUID, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_promote_participant($1, $2, $3, $4)",
        activity_id,
        user_id,
        acting_user_id,
        request_id,
    )


async def demote_participant(
    db: Database, activity_id: UUID, user_id: UUID, acting_user_id: UUID, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_demote_participant($1, $2, $3, $4)",
        activity_id,
        user_id,
        acting_user_id,
        request_id,
    )


async def mark_attendance(
    db: Database,
    activity_id: UUID,
    acting_user_id: UUID,
    entries: list[tuple[UUID, str]],
    request_id: UUID | None,
) -> asyncpg.Record:
    payload = [{"user_id": str(user), "status": status} for user, status in entries]
    return await db.fetchrow(
        "SELECT * FROM activity.sp_mark_attendance($1, $2, $3::jsonb, $4)",
        activity_id,
        acting_user_id,
        payload,
        request_id,
    )


async def confirm_attendance(
    db: Database, activity_id: UUID, user_id: UUID, acting_user_id: UUID, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_confirm_attendance($1, $2, $3, $4)",
        activity_id,
        user_id,
        acting_user_id,
        request_id,
    )


async def get_pending_verifications(
    db: Database, user_id: UUID, page_size: int, after: dict[str, Any] | None
) -> Page:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_get_pending_verifications($1, $2, $3::jsonb)", user_id, page_size, after
    )
    return _page(row)


async def send_invitations(
    db: Database,
    activity_id: UUID,
    acting_user_id: UUID,
    user_ids: list[UUID],
    message: str | None,
    expires_in_hours: int,
    request_id: UUID | None,
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_send_invitations($1, $2, $3, $4, $5, $6)",
        activity_id,
        acting_user_id,
        user_ids,
        message,
        expires_in_hours,
        request_id,
    )


async def accept_invitation(
    db: Database, invitation_id: UUID, user_id: UUID, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_accept_invitation($1, $2, $3)", invitation_id, user_id, request_id
    )


async def decline_invitation(
    db: Database, invitation_id: UUID, user_id: UUID, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_decline_invitation($1, $2, $3)", invitation_id, user_id, request_id
    )


async def cancel_invitation(
    db: Database, invitation_id: UUID, user_id: UUID, request_id: UUID | None
) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT * FROM activity.sp_cancel_invitation($1, $2, $3)", invitation_id, user_id, request_id
    )


async def get_received_invitations(
    db: Database, user_id: UUID, status: str | None, page_size: int, after: dict[str, Any] | None
) -> Page:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_get_received_invitations($1, $2, $3, $4::jsonb)",
        user_id,
        status,
        page_size,
        after,
    )
    return _page(row)


async def get_sent_invitations(
    db: Database,
    user_id: UUID,
    activity_id: UUID | None,
    status: str | None,
    page_size: int,
    after: dict[str, Any] | None,
) -> Page:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_get_sent_invitations($1, $2, $3, $4, $5::jsonb)",
        user_id,
        activity_id,
        status,
        page_size,
        after,
    )
    return _page(row)


async def get_waitlist(
    db: Database, activity_id: UUID, user_id: UUID, page_size: int, after: dict[str, Any] | None
) -> Page:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_get_waitlist($1, $2, $3, $4::jsonb)",
        activity_id,
        user_id,
        page_size,
        after,
    )
    return _page(row)


async def is_replay(db: Database, user_id: UUID, request_id: UUID, rpc: str) -> bool:
    """Will this call be answered from the stored reply of an earlier one (contract 10)?"""
    row = await db.fetchrow("SELECT activity.pa_is_replay($1, $2, $3)", user_id, request_id, rpc)
    return bool(row[0])


async def prune_request_replies(db: Database, limit: int) -> int:
    """Deletes up to `limit` stored replies past their 24 h; returns how many."""
    row = await db.fetchrow("SELECT activity.pa_prune_request_replies($1)", limit)
    return int(row[0])
