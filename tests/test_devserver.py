"""The demo data keeps the service's invariants on every load, and `dev` prints a call that works."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from participation_grpc.demo import (
    DEMO_USER_ID,
    FINN_USER_ID,
    SATURDAY_HIKE_ID,
    SUNDAY_RUN_ID,
    load_demo,
)
from participation_grpc.devserver import run_dev
from participation_grpc.settings import Settings
from tests.certs import Authority

DEMO_ACTIVITIES = "activity_id::text LIKE 'a0000000-0000-4000-8000-%'"


async def _violations(conn: asyncpg.Connection) -> list[str]:
    """Every broken invariant of the demo activities, as readable lines (empty when all hold)."""
    rows = await conn.fetch(f"""
        SELECT a.title,
               a.current_participants_count = (SELECT count(*) FROM activity.participants p
                   WHERE p.activity_id = a.activity_id AND p.participation_status = 'registered')
                   AS seats_exact,
               a.waitlist_count = (SELECT count(*) FROM activity.waitlist_entries w
                   WHERE w.activity_id = a.activity_id) AS waitlist_exact,
               a.current_participants_count <= a.max_participants AS within_capacity,
               a.scheduled_at > a.created_at AS scheduled_after_created,
               (SELECT coalesce(bool_and(x.position = x.rn), true)
                FROM (SELECT w.position, row_number() OVER (ORDER BY w.position) AS rn
                      FROM activity.waitlist_entries w WHERE w.activity_id = a.activity_id) x)
                   AS positions_gapless,
               EXISTS (SELECT 1 FROM activity.participants p
                       WHERE p.activity_id = a.activity_id AND p.user_id = a.organizer_user_id
                         AND p.role = 'organizer' AND p.participation_status = 'registered')
                   AS organizer_seated,
               NOT EXISTS (SELECT 1 FROM activity.waitlist_entries w
                           JOIN activity.participants p USING (activity_id, user_id)
                           WHERE w.activity_id = a.activity_id
                             AND p.participation_status = 'registered') AS no_double_place,
               a.current_participants_count = a.max_participants OR a.waitlist_count = 0
                   AS waitlist_only_when_full
        FROM activity.activities a WHERE {DEMO_ACTIVITIES}""")
    return [
        f"{row['title']}: {name}" for row in rows for name, ok in row.items() if name != "title" and not ok
    ]


async def test_demo_data_loads_twice_and_keeps_invariants(database_url: str) -> None:
    await load_demo(database_url)
    await load_demo(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        assert await _violations(conn) == []
        kinds = await conn.fetchrow(f"""
            SELECT array_agg(DISTINCT activity_privacy_level::text) AS privacy,
                   array_agg(DISTINCT activity_type::text) AS types,
                   count(*) FILTER (WHERE status = 'draft') AS drafts,
                   count(*) FILTER (WHERE waitlist_count > 0
                                      AND current_participants_count = max_participants) AS full
            FROM activity.activities WHERE {DEMO_ACTIVITIES}""")
        assert kinds is not None
        assert sorted(kinds["privacy"]) == ["friends_only", "invite_only", "public"]
        assert sorted(kinds["types"]) == ["mens_only", "standard", "womens_only", "xxl"]
        assert kinds["drafts"] == 1 and kinds["full"] >= 1
    finally:
        await conn.close()


async def test_reloading_resets_the_demo_activities(database_url: str) -> None:
    await load_demo(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.fetch("SELECT * FROM activity.sp_join_activity($1, $2)", SUNDAY_RUN_ID, DEMO_USER_ID)
        await load_demo(database_url)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM activity.participants WHERE activity_id = $1 AND user_id = $2",
                SUNDAY_RUN_ID,
                DEMO_USER_ID,
            )
            == 0
        )
        assert await conn.fetchval(
            "SELECT scheduled_at > now() FROM activity.activities WHERE activity_id = $1", SUNDAY_RUN_ID
        )
        assert await _violations(conn) == []
    finally:
        await conn.close()


@pytest.mark.parametrize("transport", ["plaintext", "tls"])
async def test_dev_prints_a_join_command_that_works(
    database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, transport: str
) -> None:
    cert_file = key_file = None
    if transport == "tls":
        # TLS_CERT_FILE as a chain (server, then its CA): the banner's -cacert trusts the CA
        # in it, as it trusts a self-signed certificate that is its own CA.
        authority = Authority(tmp_path)
        server = authority.server()
        chain = tmp_path / "chain.pem"
        chain.write_bytes(server.cert.read_bytes() + authority.cert.read_bytes())
        cert_file, key_file = str(chain), str(server.key)
    settings = Settings(
        database_url=database_url,
        grpc_port=0,
        rate_limit_enabled=False,
        shutdown_grace_seconds=2.0,
        tls_cert_file=cert_file,
        tls_key_file=key_file,
    )
    dev = asyncio.create_task(run_dev(settings))
    loop = asyncio.get_running_loop()
    try:
        printed = ""
        for _ in range(300):
            printed += capsys.readouterr().out
            if "JoinActivity" in printed or dev.done():
                break
            await asyncio.sleep(0.1)
        if dev.done():
            await dev  # raises what stopped it before the banner
        command = next(line.strip() for line in printed.splitlines() if "JoinActivity" in line)
        grpcurl_lines = [line for line in printed.splitlines() if "grpcurl -" in line]
        assert len(grpcurl_lines) == 4  # join, watch, finn's join, list
        expected = "-cacert" if cert_file else "-plaintext"
        assert all(expected in line for line in grpcurl_lines), grpcurl_lines
        grpcurl = await asyncio.create_subprocess_exec(
            *shlex.split(command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await grpcurl.communicate()
        assert grpcurl.returncode == 0, err.decode()
        reply = json.loads(out)
        assert reply["activity_id"] == str(SUNDAY_RUN_ID)
        assert reply["user_id"] == str(DEMO_USER_ID)
        assert reply["participation_status"] == "PARTICIPATION_STATUS_REGISTERED"
        watch, finn_joins = (line.strip() for line in printed.splitlines() if str(SATURDAY_HIKE_ID) in line)
        event = await _watched_while_joining(database_url, watch, finn_joins)
        assert (event["event_type"], event["user_id"], event["waitlist_position"]) == (
            "PARTICIPATION_EVENT_TYPE_WAITLISTED",
            str(FINN_USER_ID),
            3,
        )
        os.kill(os.getpid(), signal.SIGTERM)  # caught by the server's handler: a clean stop
        assert await asyncio.wait_for(dev, 30) == 0
    finally:
        if not dev.done():
            dev.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _watched_while_joining(database_url: str, watch: str, join: str) -> dict[str, Any]:
    """Runs the printed watch command, then (once its stream reads) the printed join; returns
    the first event grpcurl prints."""
    watcher = await asyncio.create_subprocess_exec(*shlex.split(watch), stdout=asyncio.subprocess.PIPE)
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(600):  # a condition, not a delay: the stream's first read has run
            if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query LIKE '%sp_get_activity_events%'"
            ):
                break
            await asyncio.sleep(0.05)
        joining = await asyncio.create_subprocess_exec(*shlex.split(join), stdout=asyncio.subprocess.DEVNULL)
        assert await joining.wait() == 0
        assert watcher.stdout is not None
        printed = ""
        while True:  # grpcurl prints each message as an indented JSON object
            line = (await asyncio.wait_for(watcher.stdout.readline(), 60)).decode()
            assert line, "grpcurl's stream ended"
            printed += line
            if line == "}\n":
                event: dict[str, Any] = json.loads(printed)
                return event
    finally:
        watcher.kill()
        await watcher.wait()
        await conn.close()
