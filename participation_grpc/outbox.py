"""Typed calls of the outbox's SQL functions: what WatchActivity reads, the heads, retention."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

# pa_event notifies this channel with the activity id, for activities a process holds a lease
# on (pa_watch_lease); nothing else is sent on it.
CHANNEL = "participation_events"


class Queries(Protocol):
    """A pool (db.Database) or one connection of its own (the listener's)."""

    async def fetchrow(self, query: str, *args: Any) -> Any: ...


@dataclass(frozen=True)
class EventPage:
    """Events after a sequence as ActivityEvent fields (blocked users' left out), the last
    sequence read (the next page starts after it), and whether more may follow at once."""

    events: list[dict[str, Any]]
    last_sequence: int
    full: bool


async def open_watch(db: Queries, activity_id: UUID, user_id: UUID, after_sequence: int | None) -> int:
    """The sequence a new stream continues after; raises when it may not watch or resume."""
    row = await db.fetchrow(
        "SELECT activity.sp_watch_activity($1, $2, $3)", activity_id, user_id, after_sequence
    )
    return int(row[0])


async def read_events(
    db: Queries, activity_id: UUID, user_id: UUID, after_sequence: int, limit: int
) -> EventPage:
    row = await db.fetchrow(
        "SELECT * FROM activity.sp_get_activity_events($1, $2, $3, $4)",
        activity_id,
        user_id,
        after_sequence,
        limit,
    )
    return EventPage(row["events"], row["last_sequence"], row["read_count"] >= limit)


async def lease(db: Queries, activity_id: UUID, listener_id: UUID, seconds: float) -> None:
    """Tells writers that listener_id's process watches the activity (so they notify it)."""
    await db.fetchrow("SELECT activity.pa_watch_lease($1, $2, $3)", activity_id, listener_id, seconds)


async def leases(db: Queries, listener_id: UUID, activity_ids: list[UUID], seconds: float) -> None:
    """Renews listener_id's leases on these activities (others run out by themselves)."""
    await db.fetchrow("SELECT activity.pa_watch_leases($1, $2, $3)", listener_id, activity_ids, seconds)


async def heads(db: Queries, activity_ids: list[UUID]) -> dict[UUID, int]:
    """The last sequence of each of these activities that has events."""
    row = await db.fetchrow("SELECT * FROM activity.pa_event_heads($1)", activity_ids)
    return dict(zip(row["activity_ids"], row["last_sequences"], strict=True))


async def prune(db: Queries, before: datetime, limit: int, relayed_only: bool) -> int:
    """Deletes up to `limit` events older than `before` (only relayed ones if asked)."""
    row = await db.fetchrow("SELECT activity.pa_prune_events($1, $2, $3)", before, limit, relayed_only)
    return int(row[0])
