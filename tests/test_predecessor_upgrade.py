"""migrate over the predecessor's database (tests/predecessor.py), then the service on it.

Each repaired state is checked through the running server and the generated stubs; the race
tests run on the upgraded database too. The `service` fixture here serves a copy of the
predecessor's database as migrate left it (this module's `database_url`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import asyncpg
import grpc
import pytest

from participation_grpc.migrate import MigrationError, Report, checks, migrate
from participation_grpc.migrate import preparations as prep
from participation_grpc.migrate import steps as migrate_steps
from participation_grpc.migrate.sources import PACKAGED, Source, checksum
from participation_grpc.v1 import participation_pb2 as pb
from tests import predecessor
from tests import test_participation_race as race
from tests.conftest import Service, expect_error
from tests.postgres import scratch_database, with_database
from tests.predecessor import ids, m

ROOT = Path(__file__).resolve().parent.parent
R = pb.PARTICIPATION_STATUS_REGISTERED
W = pb.PARTICIPATION_STATUS_WAITLISTED


@pytest.fixture(scope="session")
async def predecessor_template(template: tuple[str, str]) -> AsyncIterator[str]:
    """A database as the predecessor left it, never migrated (a template: never connect to it)."""
    dsn = template[0]
    name = f"participation_predecessor_{os.getpid()}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP DATABASE IF EXISTS {name}")
    await conn.execute(f"CREATE DATABASE {name}")
    loading = await asyncpg.connect(with_database(dsn, name))
    await predecessor.load(loading)
    await loading.close()
    yield name
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()


@pytest.fixture(scope="session")
async def upgraded(template: tuple[str, str], predecessor_template: str) -> AsyncIterator[tuple[str, Report]]:
    """(template name, report): the predecessor's database after one migrate."""
    dsn = template[0]
    name = f"participation_upgraded_{os.getpid()}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP DATABASE IF EXISTS {name}")
    await conn.execute(f"CREATE DATABASE {name} TEMPLATE {predecessor_template}")
    report = await migrate(with_database(dsn, name))
    yield name, report
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()


@pytest.fixture
async def database_url(template: tuple[str, str], upgraded: tuple[str, Report]) -> AsyncIterator[str]:
    """A copy of the upgraded predecessor's database (what `service` serves in this module)."""
    async with scratch_database(template[0], "participation_upgraded", upgraded[0]) as url:
        yield url


@pytest.fixture
async def predecessor_url(template: tuple[str, str], predecessor_template: str) -> AsyncIterator[str]:
    """A copy of the predecessor's database, not migrated yet."""
    async with scratch_database(template[0], "participation_predecessor", predecessor_template) as url:
        yield url


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


async def fingerprint(url: str) -> str:
    """Everything migrate could change: the catalog of every non-system schema and all rows."""
    conn = await connect(url)
    try:
        parts = [
            repr(
                await conn.fetch(
                    """SELECT n.nspname, c.relname, c.relkind, pg_get_indexdef(c.oid),
                      (SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod)
                                         || ':' || attnotnull, ',' ORDER BY attnum)
                       FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
               ORDER BY 1, 2"""
                )
            ),
            repr(
                await conn.fetch(
                    """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                   FROM pg_constraint WHERE connamespace = 'activity'::regnamespace ORDER BY 1, 2"""
                )
            ),
            repr(
                await conn.fetch(
                    """SELECT p.oid::regprocedure::text, md5(p.prosrc) FROM pg_proc p
                   JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname IN ('activity', 'public') ORDER BY 1"""
                )
            ),
            repr(await conn.fetch("SELECT enumlabel FROM pg_enum ORDER BY enumtypid, enumsortorder")),
        ]
        tables = await conn.fetch(
            "SELECT c.oid::regclass::text AS t FROM pg_class c WHERE c.relkind = 'r' "
            "AND c.relnamespace = 'activity'::regnamespace ORDER BY 1"
        )
        for table in tables:
            parts.append(
                await conn.fetchval(
                    f"SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM {table['t']} r"
                )
            )
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    finally:
        await conn.close()


async def waitlist(service: Service, activity: uuid.UUID) -> pb.ListWaitlistResponse:
    return await service.stub.ListWaitlist(
        pb.ListWaitlistRequest(activity_id=str(activity)), metadata=service.auth(ids.organizer)
    )


async def queue(service: Service, activity: uuid.UUID) -> list[tuple[str, int]]:
    reply = await waitlist(service, activity)
    return [(e.user_id, e.position) for e in reply.entries]


async def registered(service: Service, activity: uuid.UUID) -> list[str]:
    reply = await service.call(
        "ListParticipants", ids.organizer, pb.ListParticipantsRequest(activity_id=str(activity))
    )
    return [p.user_id for p in reply.participants]


async def my_activity(service: Service, user: uuid.UUID, activity: uuid.UUID) -> pb.UserActivity | None:
    reply = await service.call("ListUserActivities", user, pb.ListUserActivitiesRequest(page_size=100))
    found = [a for a in reply.activities if a.activity_id == str(activity)]
    return found[0] if found else None


def join(activity: uuid.UUID) -> pb.JoinActivityRequest:
    return pb.JoinActivityRequest(activity_id=str(activity))


def leave(activity: uuid.UUID) -> pb.LeaveActivityRequest:
    return pb.LeaveActivityRequest(activity_id=str(activity))


def pair(activity: uuid.UUID, user: uuid.UUID) -> str:
    return f"{activity}/{user}"


# --- the report -------------------------------------------------------------------------------


async def test_migrate_applies_everything_and_reports_each_repair(upgraded: tuple[str, Report]) -> None:
    report = upgraded[1]
    migrations = sorted(p.name for p in (ROOT / "sql" / "migrations").glob("*.sql"))
    assert report.applied == [*migrations, "procedures"]
    ids_of = {k.label: k.ids for k in report.kinds.values()}
    assert sorted(ids_of[prep.NULL_IDS]) == sorted([pair(ids.null_ids, m[0]), pair(ids.null_ids, m[1])])
    assert ids_of[prep.POSITIONS] == sorted(str(a) for a in (ids.duplicates, ids.gaps, ids.null_ids))
    assert ids_of[
        "cancellations from the predecessor: reason and time moved to the participation record"
    ] == sorted([pair(ids.cancelled, m[0]), pair(ids.cancelled, m[1])])
    assert ids_of["registered and waitlisted at once: the waitlist entry removed"] == [pair(ids.both, m[0])]
    assert ids_of["waitlisted without a waitlist entry: queued at the end in joined_at order"] == sorted(
        [pair(ids.waitlisted_rows, m[1]), pair(ids.waitlisted_rows, m[2])]
    )
    assert len(ids_of["waitlisted participants rows: removed, the waitlist entry holds the place"]) == 3
    assert ids_of["invitations without expires_at: expire when the activity starts"] == [
        str(ids.inv_no_expiry)
    ]
    assert ids_of["pending invitations past expires_at: recorded as expired"] == [str(ids.inv_expired)]
    assert ids_of["seat counters out of step with the rows: recomputed"] == sorted(
        [f"{ids.counters_high} (seats 5 -> 2)", f"{ids.counters_low} (seats 1 -> 3)"]
    )
    assert ids_of["waitlist counters out of step with the queue: recomputed"] == sorted(
        [
            f"{ids.counters_high} (waiting 3 -> 0)",
            f"{ids.counters_low} (waiting 0 -> 2)",
            f"{ids.both} (waiting 2 -> 1)",
            f"{ids.waitlisted_rows} (waiting 1 -> 3)",
        ]
    )
    assert ids_of[
        "overbooked activities (more registered than max_participants): the counter "
        "stays at max_participants, the seats beyond it recorded"
    ] == [f"{ids.overbooked} (excess 0 -> 2)"]
    assert ids_of["free seats beside a waiting queue: filled from its head as a leave would"] == [
        f"{ids.free_seat} (registered 2 -> 3)"
    ]
    assert [(k.label, k.ids) for k in report.left_as_is] == [
        (checks.CALLERS, ["activity.sp_join_from_chat(uuid,uuid) calls sp_join_activity"]),
        (
            "accepted invitations without a participation (the user can be invited again)",
            [str(ids.inv_accepted_orphan)],
        ),
    ]
    summary = report.summary()
    assert (
        "  pending invitations past expires_at: recorded as expired: 1 (first: "
        f"{ids.inv_expired})" in summary.splitlines()
    )
    assert str(ids.healthy) not in summary


async def test_a_second_migrate_applies_and_repairs_nothing(database_url: str) -> None:
    again = await migrate(database_url)
    assert again.applied == [] and again.repaired == []
    assert [k.ids for k in again.left_as_is] == [[str(ids.inv_accepted_orphan)]]


async def test_dry_run_reports_what_migrate_then_does_and_changes_nothing(predecessor_url: str) -> None:
    before = await fingerprint(predecessor_url)
    dry = await migrate(predecessor_url, dry_run=True)
    assert await fingerprint(predecessor_url) == before
    real = await migrate(predecessor_url)
    assert dry.applied == real.applied and "procedures" in dry.applied
    assert {k.label: k.ids for k in dry.kinds.values()} == {k.label: k.ids for k in real.kinds.values()}
    assert dry.summary().startswith("would apply: 0001_platform_tables.sql")
    assert dry.summary().endswith("nothing was changed")


# --- each repaired state, through the RPCs ----------------------------------------------------


async def test_counters_show_the_rows(service: Service) -> None:
    mine = await my_activity(service, m[0], ids.counters_high)
    assert mine is not None
    assert mine.current_participants_count == len(await registered(service, ids.counters_high)) == 2
    # A full activity whose counter said 1: the next join is queued behind the two waiting.
    reply = await service.call("JoinActivity", m[5], join(ids.counters_low))
    assert (reply.participation_status, reply.waitlist_position) == (W, 3)
    counts = await service.seed.counts(ids.counters_low)
    assert (counts["counter"], counts["wait_counter"]) == (3, 3)


async def test_registered_and_waitlisted_user_is_registered_and_leaves_once(service: Service) -> None:
    assert await queue(service, ids.both) == [(str(m[1]), 1)]
    both = await my_activity(service, m[0], ids.both)
    assert both is not None and both.participation_status == R
    left = await service.call("LeaveActivity", m[0], leave(ids.both))
    assert not left.was_waitlisted and list(left.promoted_user_ids) == [str(m[1])]
    await expect_error(
        service.call("LeaveActivity", m[0], leave(ids.both)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_PARTICIPANT",
    )


async def test_waitlisted_rows_without_an_entry_are_queued_in_joined_at_order(service: Service) -> None:
    # member1 had an entry; member3 joined before member2.
    assert await queue(service, ids.waitlisted_rows) == [(str(m[0]), 1), (str(m[2]), 2), (str(m[1]), 3)]
    mine = await my_activity(service, m[1], ids.waitlisted_rows)
    assert mine is not None and (mine.participation_status, mine.waitlist_position) == (W, 3)
    left = await service.call("LeaveActivity", m[1], leave(ids.waitlisted_rows))
    assert left.was_waitlisted
    # Nothing of the old waitlisted row is left behind to show them waiting.
    assert await my_activity(service, m[1], ids.waitlisted_rows) is None
    assert await queue(service, ids.waitlisted_rows) == [(str(m[0]), 1), (str(m[2]), 2)]


async def test_duplicate_gapped_and_null_id_positions_come_out_in_queue_order(service: Service) -> None:
    in_order = [(str(m[0]), 1), (str(m[1]), 2), (str(m[2]), 3)]
    for activity in (ids.duplicates, ids.gaps, ids.null_ids):
        assert await queue(service, activity) == in_order, activity
    # An entry that had a NULL id can leave, and the next one moves up.
    left = await service.call("LeaveActivity", m[0], leave(ids.null_ids))
    assert left.was_waitlisted
    assert await queue(service, ids.null_ids) == [(str(m[1]), 1), (str(m[2]), 2)]
    reply = await service.call("JoinActivity", m[6], join(ids.gaps))
    assert (reply.participation_status, reply.waitlist_position) == (W, 4)


async def test_overbooked_activity_keeps_everyone_and_keeps_working(service: Service) -> None:
    """5 registered for 3 seats: the counter shows 3, joins queue, leaves and cancels work and
    promote nobody until a seat is really free."""
    assert len(await registered(service, ids.overbooked)) == 5
    mine = await my_activity(service, m[0], ids.overbooked)
    assert mine is not None and mine.current_participants_count == 3
    reply = await service.call("JoinActivity", m[5], join(ids.overbooked))
    assert (reply.participation_status, reply.waitlist_position) == (W, 2)
    left = await service.call("LeaveActivity", m[0], leave(ids.overbooked))
    assert list(left.promoted_user_ids) == []
    cancelled = await service.call(
        "CancelParticipation",
        m[1],
        pb.CancelParticipationRequest(activity_id=str(ids.overbooked), reason="Too crowded"),
    )
    assert list(cancelled.promoted_user_ids) == []
    assert len(await registered(service, ids.overbooked)) == 3
    left = await service.call("LeaveActivity", m[2], leave(ids.overbooked))
    assert list(left.promoted_user_ids) == [str(m[4])]
    assert await queue(service, ids.overbooked) == [(str(m[5]), 1)]
    counts = await service.seed.counts(ids.overbooked)
    assert counts["counter"] == counts["registered"] == 3


async def test_free_seat_beside_a_queue_was_filled_from_its_head(service: Service) -> None:
    assert await registered(service, ids.free_seat) == [str(ids.organizer), str(m[0]), str(m[2])]
    assert await queue(service, ids.free_seat) == [(str(m[3]), 1), (str(m[4]), 2)]
    # In an activity that has started, nobody was promoted.
    assert await queue(service, ids.past_free_seat) == [(str(m[0]), 1)]


async def test_predecessor_invitations_expire_and_everyone_can_be_invited_again(service: Service) -> None:
    received = await service.call("ListReceivedInvitations", m[0], pb.ListReceivedInvitationsRequest())
    assert [(i.invitation_id, i.status) for i in received.invitations] == [
        (str(ids.inv_expired), pb.INVITATION_STATUS_EXPIRED)
    ]
    assert (
        await service.seed.conn.fetchval(
            "SELECT status::text FROM activity.activity_invitations WHERE invitation_id = $1", ids.inv_expired
        )
        == "expired"
    )
    # The invitation without an end now ends when the activity starts, so it is live.
    received = await service.call("ListReceivedInvitations", m[1], pb.ListReceivedInvitationsRequest())
    (open_ended,) = received.invitations
    assert open_ended.expires_at == open_ended.activity_scheduled_at
    # Re-inviting after an expiry, a decline, and an accepted invitation that lost its
    # participation; the predecessor's UNIQUE (activity_id, user_id) made each of these fail.
    reply = await service.call(
        "SendInvitations",
        ids.organizer,
        pb.SendInvitationsRequest(
            activity_id=str(ids.invite_only), user_ids=[str(u) for u in (m[0], m[1], m[2], m[3])]
        ),
    )
    assert sorted(i.user_id for i in reply.invitations) == sorted(str(u) for u in (m[0], m[2], m[3]))
    assert [(f.user_id, f.reason) for f in reply.failures] == [(str(m[1]), "ALREADY_INVITED")]
    accepted = await service.call(
        "AcceptInvitation", m[1], pb.AcceptInvitationRequest(invitation_id=str(ids.inv_no_expiry))
    )
    assert accepted.participation_status == R
    again = next(i for i in reply.invitations if i.user_id == str(m[2]))
    accepted = await service.call(
        "AcceptInvitation", m[2], pb.AcceptInvitationRequest(invitation_id=again.invitation_id)
    )
    assert accepted.participation_status == R
    # At most one pending invitation per pair still holds.
    with pytest.raises(asyncpg.UniqueViolationError):
        await service.seed.conn.execute(
            "INSERT INTO activity.activity_invitations (activity_id, user_id, invited_by_user_id, "
            "expires_at) VALUES ($1, $2, $3, now() + interval '1 day')",
            ids.invite_only,
            m[3],
            ids.organizer,
        )


async def test_cancel_reasons_moved_to_the_participation_record(
    service: Service, template: tuple[str, str], predecessor_template: str
) -> None:
    old = await connect(with_database(template[0], f"{predecessor_template}"))
    try:
        was = {
            r["user_id"]: r["updated_at"]
            for r in await old.fetch(
                "SELECT user_id, updated_at FROM activity.participants WHERE activity_id = $1 "
                "AND participation_status = 'cancelled'",
                ids.cancelled,
            )
        }
    finally:
        await old.close()
    rows = {
        r["user_id"]: r
        for r in await service.seed.conn.fetch(
            "SELECT user_id, cancellation_reason, cancelled_at, left_at, payload "
            "FROM activity.participants WHERE activity_id = $1 AND participation_status = 'cancelled'",
            ids.cancelled,
        )
    }
    assert rows[m[0]]["cancellation_reason"] == "Knee injury"
    assert rows[m[0]]["payload"] == '{"channel": "app"}'
    assert rows[m[1]]["cancellation_reason"] is None
    for user in (m[0], m[1]):
        assert rows[user]["cancelled_at"] == rows[user]["left_at"] == was[user]
    listed = await service.call(
        "ListParticipants",
        ids.organizer,
        pb.ListParticipantsRequest(
            activity_id=str(ids.cancelled), participation_status=pb.PARTICIPATION_STATUS_CANCELLED
        ),
    )
    assert sorted(p.user_id for p in listed.participants) == sorted([str(m[0]), str(m[1])])
    # Cancelled again through the service without a reason: a later migrate leaves it so.
    assert (await service.call("JoinActivity", m[0], join(ids.cancelled))).participation_status == R
    await service.call(
        "CancelParticipation", m[0], pb.CancelParticipationRequest(activity_id=str(ids.cancelled))
    )
    assert service.settings.database_url is not None
    await migrate(service.settings.database_url)
    assert (
        await service.seed.conn.fetchval(
            "SELECT cancellation_reason FROM activity.participants WHERE activity_id = $1 AND user_id = $2",
            ids.cancelled,
            m[0],
        )
        is None
    )


async def test_untouched_activity_and_other_services_objects_survive(
    service: Service, template: tuple[str, str], predecessor_template: str
) -> None:
    conn = service.seed.conn
    assert await registered(service, ids.healthy) == [str(ids.organizer), str(m[0])]
    # Other services' functions and views in the schema still answer.
    rows = await conn.fetch(
        "SELECT user_id, success FROM activity.sp_get_activity_participants($1)", ids.healthy
    )
    assert [(r["user_id"], r["success"]) for r in rows] == [(ids.organizer, True), (m[0], True)]
    summary = await conn.fetchrow("SELECT * FROM activity.sp_get_activity_summary($1)", ids.free_seat)
    assert summary is not None
    assert (summary["registered"], summary["waiting"]) == (3, 2)
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM activity.activity_roster WHERE activity_id = $1", ids.healthy
        )
        == 2
    )
    # Each procedure has exactly one signature, ours; the other services' ones are theirs.
    signatures = await conn.fetch(
        "SELECT proname, count(*) AS n, bool_or(pg_get_function_result(oid) LIKE '%error_code%') AS old "
        "FROM pg_proc WHERE pronamespace = 'activity'::regnamespace AND proname LIKE 'sp\\_%' "
        "GROUP BY proname ORDER BY proname"
    )
    ours = {n for n in Source.read().procedure_names if n.startswith("sp_")}
    assert len(ours) >= 17
    assert {r["proname"] for r in signatures} - ours == {
        "sp_get_activity_participants",
        "sp_get_activity_summary",
        "sp_join_from_chat",
    }
    assert all(r["n"] == 1 and r["old"] == (r["proname"] not in ours) for r in signatures)
    # The trigger still stamps updates, and every constraint of theirs but one is kept as it was.
    before = await conn.fetchval(
        "SELECT updated_at FROM activity.activities WHERE activity_id = $1", ids.healthy
    )
    await conn.execute("UPDATE activity.activities SET city = 'Delft' WHERE activity_id = $1", ids.healthy)
    assert (
        await conn.fetchval("SELECT updated_at FROM activity.activities WHERE activity_id = $1", ids.healthy)
        > before
    )
    old = await connect(with_database(template[0], predecessor_template))
    query = (
        "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'activity'::regnamespace"
    )
    try:
        theirs = {r[0] for r in await old.fetch(query)}
    finally:
        await old.close()
    now = {r[0] for r in await conn.fetch(query)}
    assert theirs - now == {
        "activity.activity_invitations activity_invitations_activity_id_user_id_key "
        "UNIQUE (activity_id, user_id)"
    }


async def test_the_platforms_tables_in_their_shapes_serve_joins_and_attendance(service: Service) -> None:
    """Their friendships keep a varchar status, their blocks a reason, their confirmations
    a uuidv7() id, a unique triple and a check against confirming oneself: the rules read and
    write them as they are, and nothing answers INTERNAL."""
    joined = await service.call("JoinActivity", m[9], join(ids.friends_only))
    assert joined.participation_status == R
    await expect_error(
        service.call("JoinActivity", m[10], join(ids.friends_only)),
        grpc.StatusCode.PERMISSION_DENIED,
        "FRIENDS_ONLY",
    )
    await expect_error(
        service.call("JoinActivity", m[11], join(ids.healthy)),
        grpc.StatusCode.PERMISSION_DENIED,
        "BLOCKED_USER",
    )
    marked = await service.call(
        "MarkAttendance",
        ids.organizer,
        pb.MarkAttendanceRequest(
            activity_id=str(ids.finished),
            entries=[
                pb.AttendanceEntry(user_id=str(u), status=pb.ATTENDANCE_STATUS_ATTENDED) for u in (m[0], m[1])
            ],
        ),
    )
    assert (marked.updated_count, list(marked.failures)) == (2, [])

    def confirm(confirmer: uuid.UUID, confirmed: uuid.UUID) -> Awaitable[pb.ConfirmAttendanceResponse]:
        return service.call(
            "ConfirmAttendance",
            confirmer,
            pb.ConfirmAttendanceRequest(activity_id=str(ids.finished), user_id=str(confirmed)),
        )

    confirmed = await confirm(m[0], m[1])
    assert confirmed.verification_count == 1
    assert uuid.UUID(confirmed.confirmation_id).version == 7  # their default made the id
    await expect_error(confirm(m[0], m[1]), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_CONFIRMED")
    await expect_error(confirm(m[0], m[0]), grpc.StatusCode.INVALID_ARGUMENT, "SELF_CONFIRMATION")


async def test_race_on_the_upgraded_predecessor_fills_seats_and_queues_the_rest(service: Service) -> None:
    await race.test_200_concurrent_joins_fill_10_seats_and_queue_the_rest(service)


async def test_race_on_the_upgraded_predecessor_keeps_invariants(service: Service) -> None:
    await race.test_concurrent_join_and_leave_keep_invariants(service)


# --- refusals, half-upgraded databases, several replicas, readers -----------------------------


async def test_a_view_on_an_old_procedure_stops_migrate_before_anything_changes(predecessor_url: str) -> None:
    conn = await connect(predecessor_url)
    await conn.execute(
        "CREATE VIEW activity.roster_page AS SELECT * FROM activity.sp_list_participants("
        "NULL::uuid, NULL::uuid, NULL::activity.participation_status, NULL::activity.participant_role, "
        "10, 0)"
    )
    await conn.execute(
        "CREATE FUNCTION activity.waiting_count(p_activity_id uuid) RETURNS bigint LANGUAGE sql "
        "BEGIN ATOMIC SELECT count(*) FROM activity.sp_get_waitlist(p_activity_id, NULL::uuid, "
        "100, 0); END"
    )
    await conn.close()
    before = await fingerprint(predecessor_url)
    with pytest.raises(MigrationError) as refused:
        await migrate(predecessor_url)
    message = str(refused.value)
    assert "\n" not in message
    assert "view activity.roster_page depends on activity.sp_list_participants(" in message
    assert "function activity.waiting_count(uuid) depends on activity.sp_get_waitlist(" in message
    assert message.endswith("Nothing was changed.")
    assert await fingerprint(predecessor_url) == before
    # The command says the same in one line and exits 1.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "participation_grpc", "migrate", "--dry-run"],
        env={**os.environ, "DATABASE_URL": predecessor_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"migrate: {message}"]
    assert await fingerprint(predecessor_url) == before


async def test_an_edited_applied_migration_makes_migrate_refuse_naming_it(
    database_url: str, tmp_path: Path
) -> None:
    edited = tmp_path / "sql"
    shutil.copytree(Path(str(PACKAGED)), edited)
    target = edited / "migrations" / "0002_service_tables.sql"
    target.write_text(target.read_text() + "\n-- a later edit\n")
    before = await fingerprint(database_url)
    with pytest.raises(
        MigrationError,
        match=r"migration 0002_service_tables\.sql was changed after "
        r"it was applied",
    ):
        await migrate(database_url, sql=edited)
    assert await fingerprint(database_url) == before


async def test_a_failed_migration_is_rolled_back_whole_and_a_rerun_completes(predecessor_url: str) -> None:
    """Another service's table referencing the predecessor's one-invitation-per-pair key makes
    0010's drop of that key fail, after 0010 created its new index (built beforehand, online:
    that index stays for the next run, as do the ids filled before 0002)."""
    conn = await connect(predecessor_url)
    await conn.execute(
        "CREATE TABLE activity.invitation_reminders (activity_id uuid, user_id uuid, FOREIGN KEY "
        "(activity_id, user_id) REFERENCES activity.activity_invitations (activity_id, user_id))"
    )
    with pytest.raises(MigrationError) as failed:
        await migrate(predecessor_url)
    assert str(failed.value).startswith(
        "migration 0010_invitation_pending_unique.sql failed and was rolled back: cannot drop "
        "constraint activity_invitations_activity_id_user_id_key"
    )
    versions = {
        r[0] for r in await conn.fetch("SELECT version FROM activity.participation_schema_migrations")
    }
    assert "0007_waitlist_positions.sql" in versions and "0010_invitation_pending_unique.sql" not in versions
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM pg_constraint "
            "WHERE conname = 'activity_invitations_activity_id_user_id_key'"
        )
        == 1
    )
    # Once the other service's table refers to something else, the same command carries on.
    await conn.execute("DROP TABLE activity.invitation_reminders")
    report = await migrate(predecessor_url)
    assert report.applied[0] == "0010_invitation_pending_unique.sql" and "procedures" in report.applied
    assert report.count(prep.NULL_IDS) == 0  # filled, and kept, by the first run
    await conn.close()


async def test_a_database_left_half_upgraded_on_null_ids_completes(predecessor_url: str) -> None:
    """What the migrate before this one did: 0001-0003 applied (0002 skipping the NULL-id rows
    when renumbering), then 0004 failing on SET NOT NULL, again on every rerun."""
    conn = await connect(predecessor_url)
    # Without the duplicate among the NULL-id rows, which made that 0002 fail outright.
    await conn.execute(
        "UPDATE activity.waitlist_entries SET position = 2 WHERE activity_id = $1 AND user_id = $2",
        ids.null_ids,
        m[1],
    )
    await conn.execute(
        "CREATE TABLE activity.participation_schema_migrations (version text PRIMARY KEY, "
        "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    folder = ROOT / "sql" / "migrations"
    for name in ("0001_platform_tables.sql", "0002_service_tables.sql", "0003_invitation_cancelled.sql"):
        text = (folder / name).read_text()
        async with conn.transaction():
            await conn.execute(text)
            await conn.execute(
                "INSERT INTO activity.participation_schema_migrations VALUES ($1, $2)", name, checksum(text)
            )
    with pytest.raises(asyncpg.NotNullViolationError):
        async with conn.transaction():
            await conn.execute((folder / "0004_waitlist_queue_order.sql").read_text())
    report = await migrate(predecessor_url)
    assert report.applied[0] == "0004_waitlist_queue_order.sql"
    assert report.count(prep.NULL_IDS) == 2
    rows = await conn.fetch(
        "SELECT user_id, waitlist_id FROM activity.waitlist_entries WHERE activity_id = $1 ORDER BY position",
        ids.null_ids,
    )
    assert [r["user_id"] for r in rows] == [m[0], m[1], m[2]]
    assert all(r["waitlist_id"] is not None for r in rows)
    await conn.close()


async def test_several_replicas_migrate_the_predecessor_at_once(predecessor_url: str) -> None:
    reports = await asyncio.gather(*(migrate(predecessor_url) for _ in range(4)))
    applied = [step for report in reports for step in report.applied]
    assert applied.count("0002_service_tables.sql") == applied.count("procedures") == 1
    assert sum(r.count(prep.NULL_IDS) for r in reports) == 2
    assert sum(len(r.repaired) > 0 for r in reports) == 1


class _Retries(logging.Handler):
    """Counts migrate's 'a lock was busy' retries, and wakes whoever waits for the next one."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "a lock was busy" in record.getMessage():
            self.count += 1
            self.event.set()


async def test_migrate_waits_for_open_transactions_names_them_and_never_holds_up_readers(
    predecessor_url: str,
) -> None:
    holder = await connect(predecessor_url)
    reader = await connect(predecessor_url)
    pid = await holder.fetchval("SELECT pg_backend_pid()")
    retries = _Retries()
    logger = logging.getLogger("participation_grpc.migrate.steps")
    logger.addHandler(retries)
    logger.setLevel(logging.INFO)
    try:
        # A transaction holding a snapshot: an index built concurrently waits for it to end.
        await holder.execute("BEGIN")
        await holder.fetchval("SELECT count(*) FROM activity.participants")
        with pytest.raises(MigrationError) as gave_up:
            await migrate(predecessor_url, patience=1.0)
        assert "index waitlist_entries_position_unique: could not be built within 1 s" in str(gave_up.value)
        assert f"pid {pid} " in str(gave_up.value)
        await holder.execute("COMMIT")

        # A transaction that has read participants (simple protocol: no snapshot kept): 0002's
        # ALTER TABLE cannot get its lock. migrate gives up after its patience, naming it...
        await holder.execute("BEGIN; SELECT count(*) FROM activity.participants")
        with pytest.raises(MigrationError) as gave_up:
            await migrate(predecessor_url, patience=1.0)
        assert "migration 0002_service_tables.sql: could not take its locks" in str(gave_up.value)
        assert f"pid {pid} " in str(gave_up.value)
        steps = await reader.fetch("SELECT version FROM activity.participation_schema_migrations")
        assert [r["version"] for r in steps] == ["0001_platform_tables.sql"]

        # ...and with patience it keeps trying, while other readers are never held up by it for
        # as long as a second (their lock_timeout).
        await reader.execute("SET lock_timeout = '1s'")
        retries.count = 0
        running = asyncio.create_task(migrate(predecessor_url))
        reads = 0
        while retries.count < 5 and not running.done():
            retries.event.clear()
            retry = asyncio.ensure_future(retries.event.wait())
            await asyncio.wait({retry, running}, return_when=asyncio.FIRST_COMPLETED)
            retry.cancel()
            for table in ("participants", "waitlist_entries"):
                await reader.execute(f"SELECT count(*) FROM activity.{table}")
                reads += 1
        assert not running.done()
        await holder.execute("COMMIT")
        report = await running
        assert "0002_service_tables.sql" in report.applied and reads >= 10
    finally:
        logger.removeHandler(retries)
        await holder.close()
        await reader.close()


class _Waiting(logging.Handler):
    """Keeps migrate's 'waiting ... for older transactions to end' lines, and wakes whoever
    waits for the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "for older transactions to end" in record.getMessage():
            self.lines.append(record.getMessage())
            self.event.set()


async def test_an_index_build_waiting_for_an_open_transaction_says_whom_it_waits_for(
    predecessor_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator would otherwise see 'building index ... concurrently' and then nothing for up
    to ten minutes."""
    monkeypatch.setattr(migrate_steps, "WAIT_REPORT_SECONDS", 0.05)
    holder = await connect(predecessor_url)
    pid = await holder.fetchval("SELECT pg_backend_pid()")
    waiting = _Waiting()
    logger = logging.getLogger("participation_grpc.migrate.steps")
    logger.addHandler(waiting)
    logger.setLevel(logging.INFO)
    try:
        await holder.execute("BEGIN")
        await holder.fetchval("SELECT count(*) FROM activity.participants")  # keeps its snapshot
        running = asyncio.create_task(migrate(predecessor_url))
        said = asyncio.ensure_future(waiting.event.wait())
        await asyncio.wait({said, running}, return_when=asyncio.FIRST_COMPLETED)
        assert not running.done()
        assert waiting.lines[0].startswith("index waitlist_entries_position_unique: waiting ")
        assert f"(for up to 600 s); oldest open transactions: pid {pid} " in waiting.lines[0]
        await holder.execute("COMMIT")
        report = await running
        assert "procedures" in report.applied
    finally:
        logger.removeHandler(waiting)
        await holder.close()
