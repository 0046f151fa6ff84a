"""How long `migrate` takes on a large predecessor database, and how long readers wait on it.

`.venv/bin/python bench/migrate.py` (`make bench-migrate`) builds the predecessor's schema
(tests/predecessor_schema.sql) with --participants rows (default 200 000, 20 per activity),
--waitlist entries (default 50 000, 5 per activity) and the dirty states the predecessor leaves
(tests/predecessor.py lists them) in a template database, then, on fresh copies of it:
- `migrate --dry-run`, then `migrate`, each while --readers connections per table keep reading
  participants and waitlist_entries the way another service does (one activity's rows per
  query), and prints the duration and the readers' worst and 99th-percentile wait;
- with `--baseline REF`, the same for the migrate of git revision REF (for a before/after; the
  NULL waitlist ids are filled first there, or that migrate would fail).
DATABASE_URL (or 127.0.0.1:5432) names the server; the databases are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from participation_grpc.migrate import migrate  # noqa: E402
from tests import predecessor  # noqa: E402

TEMPLATE = "participation_bench_predecessor"

# Per activity: 20 participants rows (the organizer first), 5 waitlist entries; the dirty
# states every so many activities (g is the activity's number).
_DATA = """
INSERT INTO activity.users (user_id, email, username, password_hash, created_at)
SELECT md5('u' || g)::uuid, 'u' || g || '@bench.test', 'u' || g, 'x', now() - interval '400 days'
FROM generate_series(1, {users}) g;

INSERT INTO activity.activities (activity_id, organizer_user_id, title, description,
    activity_privacy_level, scheduled_at, max_participants, created_at)
SELECT md5('a' || g)::uuid, md5('u' || ((g * 20) % {users} + 1))::uuid, 'Activity ' || g, 'bench',
       CASE WHEN g % 5 = 0 THEN 'invite_only' ELSE 'public' END::activity.activity_privacy_level,
       now() + interval '7 days',
       CASE WHEN g % 100 = 0 THEN 15     -- overbooked: 20 registered rows
            WHEN g % 50 = 1 THEN 25      -- free seats beside a queue
            ELSE 20 END,
       now() - interval '30 days'
FROM generate_series(1, {activities}) g;

INSERT INTO activity.participants (activity_id, user_id, role, participation_status, joined_at,
    payload, updated_at)
SELECT md5('a' || g)::uuid, md5('u' || ((g * 20 + k) % {users} + 1))::uuid,
       CASE WHEN k = 0 THEN 'organizer' ELSE 'member' END::activity.participant_role,
       CASE WHEN k = 19 AND g % 20 = 0 THEN 'cancelled'
            WHEN k = 18 AND g % 50 = 3 THEN 'waitlisted'    -- no queue entry
            ELSE 'registered' END::activity.participation_status,
       now() - interval '30 days' + k * interval '1 minute',
       CASE WHEN k = 19 AND g % 20 = 0 THEN '{{"cancel_reason": "busy", "channel": "app"}}'::jsonb END,
       now() - interval '3 days'
FROM generate_series(1, {activities}) g, generate_series(0, 19) k
ON CONFLICT DO NOTHING;

INSERT INTO activity.waitlist_entries (waitlist_id, activity_id, user_id, position, created_at)
SELECT CASE WHEN (g * 5 + k) % 200 = 0 THEN NULL ELSE public.uuidv7() END,
       md5('a' || g)::uuid, md5('u' || ((g * 20 + 20 + k) % {users} + 1))::uuid,
       CASE WHEN g % 100 = 5 THEN greatest(k, 1)     -- duplicates 1, 1, 2, 3, 4
            WHEN g % 100 = 6 THEN (k + 1) * 3        -- gaps
            ELSE k + 1 END,
       now() - interval '20 days' + k * interval '1 minute'
FROM generate_series(1, {activities}) g, generate_series(0, 4) k
ON CONFLICT DO NOTHING;
-- registered and still queued
INSERT INTO activity.waitlist_entries (activity_id, user_id, position)
SELECT md5('a' || g)::uuid, md5('u' || ((g * 20 + 1) % {users} + 1))::uuid, 6
FROM generate_series(7, {activities}, 100) g
ON CONFLICT DO NOTHING;

INSERT INTO activity.activity_invitations (activity_id, user_id, invited_by_user_id, status,
    invited_at, expires_at, responded_at)
SELECT md5('a' || g)::uuid, md5('u' || ((g * 20 + 30 + k) % {users} + 1))::uuid,
       md5('u' || ((g * 20) % {users} + 1))::uuid,
       (ARRAY['pending', 'pending', 'accepted', 'declined', 'pending'])[k % 5 + 1]
           ::activity.invitation_status,
       now() - interval '10 days',
       CASE k % 5 WHEN 1 THEN now() - interval '1 day' WHEN 4 THEN NULL
                  ELSE now() + interval '3 days' END,
       CASE WHEN k % 5 IN (2, 3) THEN now() - interval '5 days' END
FROM generate_series(5, {activities}, 5) g, generate_series(0, 9) k
ON CONFLICT DO NOTHING;

-- Counters as the predecessor kept them: mostly right (capped at capacity), some drifted.
UPDATE activity.activities a
SET current_participants_count = least(r.n, a.max_participants), waitlist_count = coalesce(q.n, 0)
FROM (SELECT activity_id, count(*) FILTER (WHERE participation_status = 'registered') AS n
      FROM activity.participants GROUP BY 1) r
LEFT JOIN (SELECT activity_id, count(*) AS n FROM activity.waitlist_entries GROUP BY 1) q
    USING (activity_id)
WHERE r.activity_id = a.activity_id;
UPDATE activity.activities
SET current_participants_count = greatest(current_participants_count - 3, 0),
    waitlist_count = waitlist_count + 2
WHERE ('x' || substr(activity_id::text, 1, 2))::bit(8)::int % 50 = 9;
"""


def dsn_for(database: str) -> str:
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


@dataclass
class Waits:
    """Every reader query's time while a run lasted, per table."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def line(self, table: str) -> str:
        times = sorted(self.seconds.get(table, [0.0]))
        p99 = times[int(len(times) * 0.99) - 1] if len(times) >= 100 else times[-1]
        return (
            f"{table}: {len(times)} reads, median {statistics.median(times) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, worst {times[-1] * 1000:.0f} ms"
        )


async def build_template(server: asyncpg.Connection, participants: int, waitlist: int) -> None:
    await server.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
    await server.execute(f"CREATE DATABASE {TEMPLATE}")
    conn = await asyncpg.connect(dsn_for(TEMPLATE))
    try:
        await predecessor.load_schema(conn)
        activities = max(participants // 20, waitlist // 5)
        await conn.execute(_DATA.format(users=max(activities * 5, 1000), activities=activities))
        await conn.execute("VACUUM ANALYZE")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM activity.participants) AS p, "
            "(SELECT count(*) FROM activity.waitlist_entries) AS w, "
            "(SELECT count(*) FROM activity.activity_invitations) AS i, "
            "(SELECT count(*) FROM activity.activities) AS a"
        )
        assert counts is not None
        print(
            f"predecessor database: {counts['a']} activities, {counts['p']} participants rows, "
            f"{counts['w']} waitlist entries, {counts['i']} invitations"
        )
    finally:
        await conn.close()


async def read_while(url: str, run: Callable[[], Awaitable[Any]], readers: int) -> tuple[float, Waits, Any]:
    """Run `run` while `readers` connections per table read one activity's rows at a time."""
    conn = await asyncpg.connect(url)
    activities = [r[0] for r in await conn.fetch("SELECT activity_id FROM activity.activities")]
    await conn.close()
    waits = Waits()
    done = asyncio.Event()

    async def reader(table: str) -> None:
        conn = await asyncpg.connect(url)
        times = waits.seconds.setdefault(table, [])
        try:
            while not done.is_set():
                started = time.perf_counter()
                await conn.fetchval(
                    f"SELECT count(*) FROM activity.{table} WHERE activity_id = $1", random.choice(activities)
                )
                times.append(time.perf_counter() - started)
        finally:
            await conn.close()

    tasks = [
        asyncio.create_task(reader(t)) for t in ("participants", "waitlist_entries") for _ in range(readers)
    ]
    await asyncio.sleep(0.5)  # readers connected and warm
    started = time.perf_counter()
    try:
        result = await run()
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        await asyncio.gather(*tasks)
    return elapsed, waits, result


def old_migrate(ref: str, into: Path) -> Callable[[str], Awaitable[Any]]:
    """The migrate function of git revision `ref`, reading that revision's SQL."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    spec = importlib.util.spec_from_file_location("old_migrate", into / "participation_grpc" / "migrate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vars(module)["SQL"] = into / "sql"
    logging.getLogger(module.__name__).setLevel(logging.ERROR)  # it logs each reconcile fix
    found: Callable[[str], Awaitable[Any]] = module.migrate
    return found


async def one_run(
    server: asyncpg.Connection,
    label: str,
    run: Callable[[str], Awaitable[Any]],
    readers: int,
    prepare: str | None = None,
) -> None:
    name = f"participation_bench_run_{os.getpid()}"
    await server.execute(f"DROP DATABASE IF EXISTS {name}")
    await server.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    url = dsn_for(name)
    try:
        if prepare:
            conn = await asyncpg.connect(url)
            await conn.execute(prepare)
            await conn.close()
        elapsed, waits, _ = await read_while(url, lambda: run(url), readers)
        print(f"{label}: {elapsed:.1f} s")
        for table in ("participants", "waitlist_entries"):
            print(f"  readers of {waits.line(table)}")
    finally:
        await server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=200_000)
    parser.add_argument("--waitlist", type=int, default=50_000)
    parser.add_argument("--readers", type=int, default=2, help="reading connections per table")
    parser.add_argument("--baseline", metavar="REF", help="also time the migrate of this git revision")
    args = parser.parse_args()
    server = await asyncpg.connect(dsn_for("postgres"))
    try:
        started = time.perf_counter()
        await build_template(server, args.participants, args.waitlist)
        print(f"(built in {time.perf_counter() - started:.0f} s)")
        await one_run(server, "migrate --dry-run", lambda url: migrate(url, dry_run=True), args.readers)
        await one_run(server, "migrate", migrate, args.readers)
        if args.baseline:
            with tempfile.TemporaryDirectory() as folder:
                old = old_migrate(args.baseline, Path(folder))
                await one_run(
                    server,
                    f"migrate of {args.baseline}",
                    old,
                    args.readers,
                    prepare="UPDATE activity.waitlist_entries "
                    "SET waitlist_id = gen_random_uuid() WHERE waitlist_id IS NULL",
                )
    finally:
        await server.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await server.close()


if __name__ == "__main__":
    asyncio.run(main())
