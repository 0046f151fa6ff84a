"""`migrate`: idempotent, safe from several replicas at once, and over a predecessor's schema."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from participation_grpc.migrate import MigrationError, migrate
from tests.postgres import scratch_database


@pytest.fixture
async def empty_database(template: tuple[str, str]) -> AsyncIterator[str]:
    async with scratch_database(template[0], "participation_empty") as url:
        yield url


async def procedures(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    rows = await conn.fetch(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'activity' "
        "AND p.proname LIKE 'sp\\_%' ORDER BY 1, 2"
    )
    await conn.close()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["proname"], []).append(row["args"])
    return found


async def test_migrate_twice_applies_nothing_the_second_time(empty_database: str) -> None:
    first = (await migrate(empty_database)).applied
    assert "procedures" in first and any(step.startswith("0001") for step in first)
    again = await migrate(empty_database)
    assert again.applied == [] and again.kinds == {}
    assert (await procedures(empty_database))["sp_join_activity"] == [
        "p_activity_id uuid, p_user_id uuid, p_request_id uuid"
    ]


async def test_concurrent_migrations_from_several_replicas_all_succeed(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(5)))
    applied = [step for result in results for step in result.applied]
    assert applied.count("0001_platform_tables.sql") == 1
    assert applied.count("procedures") == 1


async def test_migrate_replaces_older_procedures_with_other_signatures(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    await conn.execute("""
        CREATE SCHEMA activity;
        CREATE FUNCTION activity.sp_join_activity(p_user_id uuid, p_activity_id uuid, p_note text)
        RETURNS text LANGUAGE sql AS $$ SELECT 'old' $$;
        CREATE FUNCTION activity.sp_leave_activity(p_activity_id text)
        RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;""")
    await conn.close()
    await migrate(empty_database)
    found = await procedures(empty_database)
    assert found["sp_join_activity"] == ["p_activity_id uuid, p_user_id uuid, p_request_id uuid"]
    assert found["sp_leave_activity"] == ["p_activity_id uuid, p_user_id uuid, p_request_id uuid"]
    # An old overload created after a migration is removed by the next one too.
    conn = await asyncpg.connect(empty_database)
    await conn.execute(
        "CREATE FUNCTION activity.sp_join_activity(p_activity_id uuid) "
        "RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$"
    )
    await conn.close()
    assert (await migrate(empty_database)).applied == ["procedures"]
    assert (await procedures(empty_database))["sp_join_activity"] == [
        "p_activity_id uuid, p_user_id uuid, p_request_id uuid"
    ]


async def test_migrate_keeps_platform_tables_and_repairs_predecessor_waitlist(empty_database: str) -> None:
    """Production: the platform's tables exist with columns of their own, and the predecessor
    left a waitlist with holes and duplicate positions."""
    conn = await asyncpg.connect(empty_database)
    await migrate(empty_database)
    await conn.execute("ALTER TABLE activity.users ADD COLUMN bio text DEFAULT 'hi'")
    organizer, a, b, c = (uuid.uuid4() for _ in range(4))
    for user in (organizer, a, b, c):
        await conn.execute(
            "INSERT INTO activity.users (user_id, email, username, password_hash) VALUES ($1, $2, $2, 'x')",
            user,
            user.hex,
        )
    activity = await conn.fetchval(
        "INSERT INTO activity.activities (activity_id, organizer_user_id, title, status, "
        "scheduled_at, max_participants, current_participants_count) VALUES (gen_random_uuid(), "
        "$1, 't', 'published', now() + interval '1 day', 1, 1) RETURNING activity_id",
        organizer,
    )
    await conn.execute(
        "INSERT INTO activity.participants (activity_id, user_id, role) VALUES ($1, $2, 'organizer')",
        activity,
        organizer,
    )  # the one seat: full
    await conn.execute(
        "ALTER TABLE activity.waitlist_entries DROP CONSTRAINT waitlist_entries_position_unique"
    )
    for user, position in ((a, 3), (b, 3), (c, 7)):
        await conn.execute(
            "INSERT INTO activity.waitlist_entries (activity_id, user_id, position) VALUES ($1, $2, $3)",
            activity,
            user,
            position,
        )
    await conn.execute(
        "DELETE FROM activity.participation_schema_migrations WHERE version = '0002_service_tables.sql'"
    )
    assert (await migrate(empty_database)).applied == ["0002_service_tables.sql"]
    positions = await conn.fetch(
        "SELECT position FROM activity.waitlist_entries WHERE activity_id = $1 ORDER BY position", activity
    )
    assert [r["position"] for r in positions] == [1, 2, 3]
    assert await conn.fetchval("SELECT bio FROM activity.users WHERE user_id = $1", a) == "hi"
    await conn.close()


async def test_migrate_gives_predecessor_id_columns_a_default(empty_database: str) -> None:
    """A predecessor's invitations table whose uuid id has no default still takes inserts."""
    conn = await asyncpg.connect(empty_database)
    await migrate(empty_database)
    await conn.execute("ALTER TABLE activity.activity_invitations ALTER COLUMN invitation_id DROP DEFAULT")
    await conn.execute(
        "DELETE FROM activity.participation_schema_migrations WHERE version = '0005_id_defaults.sql'"
    )
    assert (await migrate(empty_database)).applied == ["0005_id_defaults.sql"]
    default = await conn.fetchval(
        "SELECT column_default FROM information_schema.columns WHERE table_schema = 'activity' "
        "AND table_name = 'activity_invitations' AND column_name = 'invitation_id'"
    )
    assert default == "gen_random_uuid()"
    await conn.close()


async def test_an_unreachable_database_is_one_line() -> None:
    with pytest.raises(MigrationError, match=r"^cannot connect to the database: "):
        await migrate("postgresql://postgres@127.0.0.1:1/postgres")
