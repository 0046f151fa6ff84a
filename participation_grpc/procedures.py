"""One typed function per stored procedure: the only SQL text outside the migrations."""

from __future__ import annotations

import json
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
    after = row["next_after"]
    return Page(total_size=row["total_size"], items=json.loads(row["items"]),
                next_after=json.loads(after) if after is not None else None)


def _json(after: dict[str, Any] | None) -> str | None:
    return None if after is None else json.dumps(after)


async def join_activity(db: Database, activity_id: UUID, user_id: UUID) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM activity.sp_join_activity($1, $2)", activity_id, user_id)


async def leave_activity(db: Database, activity_id: UUID, user_id: UUID) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM activity.sp_leave_activity($1, $2)", activity_id, user_id)


async def cancel_participation(db: Database, activity_id: UUID, user_id: UUID,
                               reason: str | None) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM activity.sp_cancel_participation($1, $2, $3)",
                             activity_id, user_id, reason)


async def list_participants(db: Database, activity_id: UUID, user_id: UUID, status: str | None,
                            role: str | None, page_size: int, after: dict[str, Any] | None) -> Page:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_list_participants($1, $2, $3, $4, $5, $6::jsonb)",
        activity_id, user_id, status, role, page_size, _json(after))
    return _page(row)


async def get_user_activities(db: Database, user_id: UUID, caller_id: UUID, filter_: str | None,
                              status: str | None, page_size: int,
                              after: dict[str, Any] | None) -> Page:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_get_user_activities($1, $2, $3, $4, $5, $6::jsonb)",
        user_id, caller_id, filter_, status, page_size, _json(after))
    return _page(row)
