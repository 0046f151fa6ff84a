"""Procedures and messages cannot drift apart: every result column, and every key of every list
item the procedures build, is a field of the message it becomes, and every field has one; the
numbers both sides could decide (page sizes, the invitation expiry) are the procedures' alone."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
from google.protobuf.message import Message

from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import Service
from tests.seed import Seed

# Each procedure and the response the servicer builds from its row.
UNARY: dict[str, type[Message]] = {
    "sp_join_activity": pb.JoinActivityResponse,
    "sp_leave_activity": pb.LeaveActivityResponse,
    "sp_cancel_participation": pb.CancelParticipationResponse,
    "sp_promote_participant": pb.PromoteParticipantResponse,
    "sp_demote_participant": pb.DemoteParticipantResponse,
    "sp_mark_attendance": pb.MarkAttendanceResponse,
    "sp_confirm_attendance": pb.ConfirmAttendanceResponse,
    "sp_send_invitations": pb.SendInvitationsResponse,
    "sp_accept_invitation": pb.AcceptInvitationResponse,
    "sp_decline_invitation": pb.DeclineInvitationResponse,
    "sp_cancel_invitation": pb.CancelInvitationResponse,
}
LISTS: dict[str, type[Message]] = {
    "sp_list_participants": pb.ListParticipantsResponse,
    "sp_get_user_activities": pb.ListUserActivitiesResponse,
    "sp_get_pending_verifications": pb.ListPendingVerificationsResponse,
    "sp_get_received_invitations": pb.ListReceivedInvitationsResponse,
    "sp_get_sent_invitations": pb.ListSentInvitationsResponse,
    "sp_get_waitlist": pb.ListWaitlistResponse,
}


def fields(message: type[Message] | Any) -> set[str]:
    return {f.name for f in message.DESCRIPTOR.fields}


def item_type(response: type[Message], field: str) -> type[Message]:
    item = response.DESCRIPTOR.fields_by_name[field].message_type
    assert item is not None, f"{field} is not a message field"
    found = getattr(pb, item.name)
    assert isinstance(found, type) and issubclass(found, Message), item.name
    return found


async def result_columns(conn: asyncpg.Connection, name: str) -> set[str]:
    rows = await conn.fetch(
        """SELECT a.name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
                  unnest(p.proargnames, p.proargmodes) AS a(name, mode)
           WHERE n.nspname = 'activity' AND p.proname = $1 AND a.mode IN ('o', 't')""",
        name,
    )
    return {r["name"] for r in rows}


async def test_every_result_column_is_a_field_of_its_response_and_back(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for name, response in UNARY.items():
            assert await result_columns(conn, name) == fields(response), name
        for name, response in LISTS.items():
            assert await result_columns(conn, name) == {"total_size", "items", "next_after"}, name
            repeated = [f.name for f in response.DESCRIPTOR.fields if f.is_repeated]
            assert fields(response) == {*repeated, "total_size", "next_page_token"}
            assert len(repeated) == 1, name
    finally:
        await conn.close()


async def sample(seed: Seed) -> dict[str, Any]:
    """One of everything the lists show, seen by `me`: a registered participation, a waitlist
    place, an attended past activity with someone to confirm, invitations both ways."""
    me, organizer, other = await seed.user(), await seed.user(), await seed.user()
    full = await seed.activity(organizer, max_participants=1)
    await seed.conn.execute(
        "INSERT INTO activity.waitlist_entries (activity_id, user_id, position) VALUES ($1, $2, 7)", full, me
    )
    await seed.conn.execute("UPDATE activity.activities SET waitlist_count = 1 WHERE activity_id = $1", full)
    joined = await seed.activity(organizer)
    await seed.participant(joined, me)
    past = await seed.activity(organizer, starts_in=-timedelta(hours=2))
    await seed.participant(past, me, attendance="attended")
    await seed.participant(past, other, attendance="attended")
    invite_only = await seed.activity(me, privacy="invite_only")
    await seed.invitation(invite_only, other, me)
    mine = await seed.activity(organizer, privacy="invite_only")
    await seed.invitation(mine, me, organizer)
    return {"me": me, "organizer": organizer, "other": other, "full": full, "joined": joined}


async def test_every_list_item_key_is_a_field_of_its_message_and_back(service: Service) -> None:
    seed = service.seed
    s = await sample(seed)
    me, organizer, other = s["me"], s["organizer"], s["other"]
    calls = {
        "sp_list_participants": ("($1, $2)", (s["joined"], me)),
        "sp_get_user_activities": ("($1, $2)", (me, me)),
        "sp_get_pending_verifications": ("($1)", (me,)),
        "sp_get_received_invitations": ("($1)", (me,)),
        "sp_get_sent_invitations": ("($1)", (me,)),
        "sp_get_waitlist": ("($1, $2)", (s["full"], organizer)),
    }
    for name, (arguments, values) in calls.items():
        row = await seed.fetchrow(f"SELECT * FROM activity.{name}{arguments}", *values)
        items = json.loads(row["items"])
        assert items, name
        field = next(f.name for f in LISTS[name].DESCRIPTOR.fields if f.is_repeated)
        item = item_type(LISTS[name], field)
        for entry in items:
            assert set(entry) == fields(item), (name, set(entry) ^ fields(item))
        if name == "sp_get_pending_verifications":
            nested = item_type(item, "participants_to_confirm")
            assert all(set(p) == fields(nested) for e in items for p in e["participants_to_confirm"])
    sent = await seed.fetchrow(
        "SELECT * FROM activity.sp_send_invitations($1, $2, $3)",
        (
            await seed.fetchrow(
                "SELECT activity_id FROM activity.activities "
                "WHERE organizer_user_id = $1 AND "
                "activity_privacy_level = 'invite_only'",
                me,
            )
        )["activity_id"],
        me,
        [organizer, other, me],
    )
    assert all(set(i) == fields(pb.Invitation) for i in json.loads(sent["invitations"]))
    failures = json.loads(sent["failures"])
    assert failures and all(set(f) == fields(pb.ItemFailure) for f in failures)


async def test_defaults_are_the_procedures_for_rpcs_and_platform_tools_alike(service: Service) -> None:
    """Page size 0 and a direct call without one get the same default, above 100 is 100, and
    an invitation without a lifetime expires after 72 hours, by RPC or by SQL."""
    seed = service.seed
    organizer = await seed.user()
    activity = await seed.activity(organizer, max_participants=200)
    users = [uuid.uuid4() for _ in range(120)]
    await seed.conn.copy_records_to_table(
        "users",
        schema_name="activity",
        columns=["user_id", "email", "username", "password_hash"],
        records=[(u, f"{u.hex}@example.test", u.hex, "x") for u in users],
    )
    await seed.conn.copy_records_to_table(
        "participants",
        schema_name="activity",
        columns=["activity_id", "user_id"],
        records=[(activity, u) for u in users],
    )
    await seed.conn.execute(
        "UPDATE activity.activities SET current_participants_count = 121 WHERE activity_id = $1", activity
    )
    direct = await seed.fetchrow("SELECT * FROM activity.sp_list_participants($1, $2)", activity, organizer)
    for size, expected in ((0, len(json.loads(direct["items"]))), (1000, 100)):
        page = await service.call(
            "ListParticipants",
            organizer,
            pb.ListParticipantsRequest(activity_id=str(activity), page_size=size),
        )
        assert (len(page.participants), page.total_size) == (expected, 121)
    assert len(json.loads(direct["items"])) == 50

    invite_only = await seed.activity(organizer, privacy="invite_only")
    reply = await service.call(
        "SendInvitations",
        organizer,
        pb.SendInvitationsRequest(activity_id=str(invite_only), user_ids=[str(users[0])]),
    )
    by_sql = await seed.fetchrow(
        "SELECT * FROM activity.sp_send_invitations($1, $2, $3)", invite_only, organizer, [users[1]]
    )
    lifetimes = await seed.conn.fetch(
        "SELECT expires_at - invited_at AS lifetime FROM activity.activity_invitations "
        "WHERE activity_id = $1",
        invite_only,
    )
    assert len(reply.invitations) == len(json.loads(by_sql["invitations"])) == 1
    assert [r["lifetime"] for r in lifetimes] == [timedelta(hours=72)] * 2
