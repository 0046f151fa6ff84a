"""What participation events cost (run by `make bench`): bare asyncpg, then one gRPC watcher.

`.venv/bin/python bench/events.py --pairs 300 --rounds 3` prints, in one run:
- join + leave with no event writes at all (activity.pa_event swapped for a no-op in the
  bench's own database), with the outbox as shipped on activities nobody watches, and on
  activities that are all watched (each commit then NOTIFYs): the median per pair on one
  connection, the PostgreSQL backend's CPU per pair, and pairs per second of 16 callers on 16
  activities. The variants take turns, round after round, so the machine's mood is shared out
  evenly;
- commit to watcher: from a join's commit (the statement returning on a bare connection) to
  its event arriving on a WatchActivity stream of a server running here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc

from participation_grpc.app import running
from participation_grpc.auth import mint_token
from participation_grpc.migrate import migrate
from participation_grpc.settings import Settings
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc as pb_grpc

JOIN = "SELECT * FROM activity.sp_join_activity($1, $2)"
LEAVE = "SELECT * FROM activity.sp_leave_activity($1, $2)"
CALLERS = 16
# The writers compared; "shipped" is sql/procedures/00_events.sql itself. It notifies only
# activities someone watches, so it runs twice: as most writes meet it, and with every bench
# activity watched (a lease held, as an open WatchActivity stream holds one).
SIGNATURE = (
    "activity.pa_event(p_activity_id uuid, p_event_type text, p_user_id uuid, "
    "p_actor_user_id uuid, p_payload jsonb DEFAULT '{}')"
)
NO_EVENTS = f"CREATE OR REPLACE FUNCTION {SIGNATURE} RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint'"
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = (ROOT / "sql" / "procedures" / "00_events.sql").read_text()
VARIANTS = {
    "no event writes": (NO_EVENTS, False),
    "events, nobody watching": (SHIPPED, False),
    "events, every activity watched": (SHIPPED, True),
}
WATCH_ALL = """INSERT INTO activity.participation_event_watchers
               SELECT activity_id, '00000000-0000-4000-8000-0000000000be', now() + interval '1 day'
               FROM activity.activities ON CONFLICT DO NOTHING"""
UNWATCH_ALL = "DELETE FROM activity.participation_event_watchers"


def dsn_for(database: str) -> str:
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def backend_cpu_ns(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def seed(
    conn: asyncpg.Connection, activities: int, users: int
) -> tuple[uuid.UUID, list[uuid.UUID], list[uuid.UUID]]:
    """An organizer, open activities (seats to spare) and users to join them."""
    ids = [uuid.uuid4() for _ in range(users + 1)]
    await conn.copy_records_to_table(
        "users",
        schema_name="activity",
        columns=["user_id", "email", "username", "password_hash", "first_name"],
        records=[(u, f"{u.hex}@bench.test", f"u{u.hex}", "x", "Bench") for u in ids],
    )
    organizer, members = ids[0], ids[1:]
    made = [uuid.uuid4() for _ in range(activities)]
    for activity in made:
        await conn.execute(
            """INSERT INTO activity.activities (activity_id, organizer_user_id, title, status,
                   scheduled_at, max_participants, current_participants_count)
               VALUES ($1, $2, 'Bench', 'published', now() + interval '7 days', 1000000, 1)""",
            activity,
            organizer,
        )
        await conn.execute(
            "INSERT INTO activity.participants (activity_id, user_id, role) VALUES ($1, $2, 'organizer')",
            activity,
            organizer,
        )
    return organizer, made, members


async def pairs_on_one_connection(
    conn: asyncpg.Connection, pid: int, activity: uuid.UUID, users: list[uuid.UUID], pairs: int
) -> tuple[list[float], int | None]:
    times = []
    cpu_before = backend_cpu_ns(pid)
    for i in range(pairs):
        user = users[i % len(users)]
        started = time.perf_counter()
        await conn.fetchrow(JOIN, activity, user)
        await conn.fetchrow(LEAVE, activity, user)
        times.append(time.perf_counter() - started)
    cpu_after = backend_cpu_ns(pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return times, cpu


async def pairs_per_second(
    pool: asyncpg.Pool, activities: list[uuid.UUID], users: list[uuid.UUID], pairs: int
) -> float:
    async def caller(n: int) -> None:
        mine = users[n::CALLERS]
        async with pool.acquire() as conn:
            for i in range(pairs):
                user = mine[i % len(mine)]
                await conn.fetchrow(JOIN, activities[n], user)
                await conn.fetchrow(LEAVE, activities[n], user)

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    return CALLERS * pairs / (time.perf_counter() - started)


async def outbox_cost(dsn: str, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(dsn)
    _, activities, users = await seed(conn, CALLERS + 1, 20 * CALLERS)
    await conn.execute("ANALYZE")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    pool = await asyncpg.create_pool(dsn, min_size=CALLERS, max_size=CALLERS)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (writer, watched) in VARIANTS.items():
            await conn.execute(writer)
            await conn.execute(WATCH_ALL if watched else UNWATCH_ALL)
            await pairs_on_one_connection(conn, pid, activities[-1], users, 20)  # warm
            spent, used = await pairs_on_one_connection(conn, pid, activities[-1], users, args.pairs)
            times[name] += spent
            if used is not None:
                cpu[name].append(used / args.pairs)
            rates[name].append(await pairs_per_second(pool, activities[:CALLERS], users, args.pairs // 4))
    await conn.execute(SHIPPED)
    await conn.execute(UNWATCH_ALL)
    await pool.close()
    await conn.close()
    base = statistics.median(times["no event writes"])
    base_rate = statistics.median(rates["no event writes"])
    print(
        f"join + leave, bare asyncpg: {args.rounds} rounds of {args.pairs} pairs per variant "
        f"on one connection (medians), and {CALLERS} callers on {CALLERS} activities"
    )
    print(
        "| writer | ms per join+leave | vs none | backend CPU per pair | "
        f"{CALLERS} callers, pairs/s | vs none |"
    )
    print("|---|---|---|---|---|---|")
    for name in VARIANTS:
        median = statistics.median(times[name])
        used_ms = f"{statistics.median(cpu[name]) / 1e6:.3f} ms" if cpu[name] else "n/a"
        rate = statistics.median(rates[name])
        print(
            f"| {name} | {median * 1e3:.3f} | {median / base:.2f}x | {used_ms} | "
            f"{rate:.0f} | {rate / base_rate:.2f}x |"
        )
    shipped = statistics.median(times["events, nobody watching"])
    line = (
        f"outbox cost per write (a join or a leave, one event each): "
        f"{(shipped - base) * 1e3 / 2:+.3f} ms of latency ({(shipped / base - 1) * 100:+.0f} %)"
    )
    if cpu["events, nobody watching"] and cpu["no event writes"]:
        extra = statistics.median(cpu["events, nobody watching"]) - statistics.median(cpu["no event writes"])
        line += f", {extra / 2e6:+.3f} ms of PostgreSQL CPU"
    print(line)


async def commit_to_watcher(dsn: str, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(dsn)
    organizer, (activity,), users = await seed(conn, 1, 50)
    settings = Settings(
        database_url=dsn,
        grpc_host="127.0.0.1",
        grpc_port=0,
        rate_limit_enabled=False,
        shutdown_pause_seconds=0.0,
    )
    latencies: list[float] = []
    from_insert: list[float] = []
    async with running(settings) as app:
        channel = grpc.aio.insecure_channel(app.address)
        stub = pb_grpc.ParticipationServiceStub(channel)
        token = mint_token(settings, organizer)
        stream = stub.WatchActivity(
            pb.WatchActivityRequest(activity_id=str(activity), after_sequence=0),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        for i in range(args.latency_events):
            user = users[(i // 2) % len(users)]
            await conn.fetchrow(JOIN if i % 2 == 0 else LEAVE, activity, user)
            committed = time.perf_counter()
            event = await stream.read()
            latencies.append(time.perf_counter() - committed)
            assert isinstance(event, pb.ActivityEvent), "the stream ended"
            # From the event's insert (PostgreSQL's clock, the same host's): an upper bound
            # that does not depend on when this loop got round to noting the commit.
            from_insert.append(time.time() - event.occurred_at.ToNanoseconds() / 1e9)
            assert event.sequence == i + 1, event
        stream.cancel()
        await channel.close()
    await conn.close()
    print(
        f"\ncommit to watcher ({len(latencies)} events, one at a time; server, watcher and "
        f"writer on this host, the stream on a watched activity):"
    )
    for label, values in (("from the commit's return", latencies), ("from the event's insert", from_insert)):
        values.sort()
        p = [values[int(q * (len(values) - 1))] * 1e3 for q in (0.5, 0.95, 0.99)]
        print(
            f"  {label}: p50 {p[0]:.1f} ms, p95 {p[1]:.1f} ms, p99 {p[2]:.1f} ms, "
            f"max {values[-1] * 1e3:.1f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=300, help="join+leave pairs per round")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each variant")
    parser.add_argument("--latency-events", type=int, default=200)
    args = parser.parse_args()
    database = f"participation_bench_events_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn_for("postgres"))
    await admin.execute(f"CREATE DATABASE {database}")
    try:
        await migrate(dsn_for(database))
        version = await admin.fetchval("SHOW server_version")
        print(f"PostgreSQL {version}; {os.cpu_count()} CPUs shared with the benchmark")
        await outbox_cost(dsn_for(database), args)
        await commit_to_watcher(dsn_for(database), args)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
