"""What the procedures cost in PostgreSQL alone: bare asyncpg, no gRPC (run by `make bench`).

`.venv/bin/python bench/sql.py --calls 200 --sizes 100,10000` prints, in one run:
- each operation's median at every size and the growth from the smallest to the largest size;
- the PostgreSQL backend's CPU per call (from /proc, so only when the server is on this machine);
- joins per second of 32 callers on one activity (hot) against 32 callers spread over 200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from participation_grpc.migrate import migrate

JOIN = "SELECT * FROM activity.sp_join_activity($1, $2)"
LEAVE = "SELECT * FROM activity.sp_leave_activity($1, $2)"
# The same with a request_id (contract 10): each call also stores its reply.
JOIN_KEYED = "SELECT * FROM activity.sp_join_activity($1, $2, $3)"
LEAVE_KEYED = "SELECT * FROM activity.sp_leave_activity($1, $2, $3)"
PARTICIPANTS = "SELECT * FROM activity.sp_list_participants($1, $2, NULL, NULL, 50, NULL)"
WAITLIST = "SELECT * FROM activity.sp_get_waitlist($1, $2, 50, NULL)"
HOT_CALLERS = 32
SPREAD_OVER = 200
ROWS = ("join + leave (open activity)", "join + leave with request_id",
        "leave that promotes the waitlist's head",
        "join onto the waitlist", "ListParticipants, first page of 50",
        "ListWaitlist, first page of 50")


def dsn_for(database: str) -> str:
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def backend_cpu_ns(pid: int) -> int | None:
    """CPU time a PostgreSQL backend has used (schedstat's first field, in ns); None when the
    server is not on this machine."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Users:
    """Seeded users handed out once each, so every join is a first join."""

    ids: list[uuid.UUID]
    _next: int = 0

    def take(self, n: int = 1) -> list[uuid.UUID]:
        if self._next + n > len(self.ids):
            raise SystemExit("bench/sql.py ran out of seeded users: raise --spare")
        taken = self.ids[self._next:self._next + n]
        self._next += n
        return taken


@dataclass
class Sized:
    """The activities of one size N: open (N registered, seats to spare) and full (N registered,
    N waitlisted)."""

    n: int
    organizer: uuid.UUID
    open_activity: uuid.UUID
    full_activity: uuid.UUID
    registered: deque[uuid.UUID]  # members of the full activity, longest-registered first
    waiting: deque[uuid.UUID]  # its waitlist in queue order


@dataclass
class Measured:
    median_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms: dict[str, float | None] = field(default_factory=dict)


class Seeder:
    def __init__(self, conn: asyncpg.Connection, users: Users) -> None:
        self.conn = conn
        self.users = users
        self.organizer = users.take()[0]

    async def activity(self, seats: int, registered: list[uuid.UUID],
                       waitlisted: list[uuid.UUID]) -> uuid.UUID:
        """A published public activity next week; its organizer in the first seat, then
        `registered` members and `waitlisted` users in joining order, counters true."""
        activity = uuid.uuid4()
        await self.conn.execute(
            """INSERT INTO activity.activities (activity_id, organizer_user_id, title, status,
                   scheduled_at, max_participants, current_participants_count, waitlist_count)
               VALUES ($1, $2, 'Bench', 'published', now() + interval '7 days', $3, $4, $5)""",
            activity, self.organizer, seats, len(registered) + 1, len(waitlisted))
        start = datetime.now(UTC) - timedelta(days=1)
        await self.conn.copy_records_to_table(
            "participants", schema_name="activity",
            columns=["activity_id", "user_id", "role", "participation_status", "joined_at"],
            records=[(activity, self.organizer, "organizer", "registered", start)]
            + [(activity, u, "member", "registered", start + timedelta(seconds=i + 1))
               for i, u in enumerate(registered)])
        await self.conn.copy_records_to_table(
            "waitlist_entries", schema_name="activity",
            columns=["activity_id", "user_id", "position", "created_at"],
            records=[(activity, u, i + 1, start + timedelta(hours=1, seconds=i))
                     for i, u in enumerate(waitlisted)])
        return activity

    async def sized(self, n: int) -> Sized:
        members = self.users.take(n - 1)
        open_activity = await self.activity(n + 100_000, members, [])
        waiting = self.users.take(n)
        full_activity = await self.activity(n, members, waiting)
        return Sized(n, self.organizer, open_activity, full_activity, deque(members),
                     deque(waiting))


async def seed_users(conn: asyncpg.Connection, count: int) -> Users:
    ids = [uuid.uuid4() for _ in range(count)]
    await conn.copy_records_to_table(
        "users", schema_name="activity",
        columns=["user_id", "email", "username", "password_hash", "first_name", "last_name"],
        records=[(u, f"{u.hex}@bench.test", f"u{u.hex}", "x", "Bench", "User") for u in ids])
    return Users(ids)


class Probe:
    """Runs measured calls on one connection: the wall time of each, and the backend's CPU
    summed over all of them (calls that only put the data back are made around it)."""

    def __init__(self, conn: asyncpg.Connection, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.cpu_ns: int | None = 0
        self.calls = 0

    async def __call__(self, query: str, *args: object) -> float:
        cpu = backend_cpu_ns(self.pid)
        start = time.perf_counter()
        await self.conn.fetchrow(query, *args)
        spent = time.perf_counter() - start
        after = backend_cpu_ns(self.pid)
        if cpu is None or after is None or self.cpu_ns is None:
            self.cpu_ns = None
        else:
            self.cpu_ns += after - cpu
        self.calls += 1
        return spent

    async def row(self, calls: int, step: Callable[[], Awaitable[float]]
                  ) -> tuple[float, float | None]:
        """Median ms of `calls` steps after a warm-up, and PostgreSQL CPU ms per measured call."""
        for _ in range(5):
            await step()
        self.cpu_ns, self.calls = 0, 0
        median = statistics.median([await step() for _ in range(calls)]) * 1000
        return median, None if self.cpu_ns is None else self.cpu_ns / 1e6 / self.calls


async def measure(conn: asyncpg.Connection, pid: int, s: Sized, users: Users, calls: int
                  ) -> Measured:
    """The five rows for one size. Every step puts the activity back as it found it (a leaver
    joins again, a joiner leaves again), outside the measured calls, so each call meets N."""
    probe, out = Probe(conn, pid), Measured()

    async def join_leave() -> float:
        user = users.take()[0]
        return (await probe(JOIN, s.open_activity, user)
                + await probe(LEAVE, s.open_activity, user))

    async def keyed_join_leave() -> float:
        user = users.take()[0]
        return (await probe(JOIN_KEYED, s.open_activity, user, uuid.uuid4())
                + await probe(LEAVE_KEYED, s.open_activity, user, uuid.uuid4()))

    async def promoting_leave() -> float:
        user = s.registered.popleft()  # a member leaves; the head of the queue takes the seat
        spent = await probe(LEAVE, s.full_activity, user)
        s.registered.append(s.waiting.popleft())
        await conn.fetchrow(JOIN, s.full_activity, user)  # back at the end of the queue
        s.waiting.append(user)
        return spent

    async def waitlisted_join() -> float:
        user = users.take()[0]
        spent = await probe(JOIN, s.full_activity, user)
        await conn.fetchrow(LEAVE, s.full_activity, user)
        return spent

    async def participants() -> float:
        return await probe(PARTICIPANTS, s.open_activity, s.organizer)

    async def waitlist() -> float:
        return await probe(WAITLIST, s.full_activity, s.organizer)

    steps = (join_leave, keyed_join_leave, promoting_leave, waitlisted_join, participants,
             waitlist)
    for row, step in zip(ROWS, steps, strict=True):
        out.median_ms[row], out.cpu_ms[row] = await probe.row(calls, step)
    return out


async def joins_per_second(pool: asyncpg.Pool, activities: list[uuid.UUID], users: Users,
                           per_caller: int) -> float:
    """HOT_CALLERS callers, each joining `per_caller` fresh users, activities taken in turn."""
    turns = iter(range(HOT_CALLERS * per_caller))

    async def caller(mine: list[uuid.UUID]) -> None:
        async with pool.acquire() as conn:
            for user in mine:
                await conn.fetchrow(JOIN, activities[next(turns) % len(activities)], user)

    batches = [users.take(per_caller) for _ in range(HOT_CALLERS)]
    start = time.perf_counter()
    await asyncio.gather(*(caller(b) for b in batches))
    return HOT_CALLERS * per_caller / (time.perf_counter() - start)


def table(sizes: list[int], results: dict[int, Measured]) -> Iterator[str]:
    head = " | ".join(f"N = {n:,}" for n in sizes)
    cpu_head = " | ".join(f"PG CPU, N = {n:,}" for n in sizes)
    yield f"| Operation | {head} | growth | {cpu_head} |"
    yield "|---|" + "---|" * (2 * len(sizes) + 1)
    for row in ROWS:
        medians = [results[n].median_ms[row] for n in sizes]
        cpu = [results[n].cpu_ms[row] for n in sizes]
        yield (f"| {row} | " + " | ".join(f"{m:.2f} ms" for m in medians)
               + f" | {medians[-1] / medians[0]:.2f}x | "
               + " | ".join("n/a" if c is None else f"{c:.3f} ms" for c in cpu) + " |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,10000", help="N: members (and waitlisted)")
    parser.add_argument("--calls", type=int, default=200, help="measured calls per row and size")
    parser.add_argument("--hot-joins", type=int, default=60, help="joins per caller, hot/spread")
    parser.add_argument("--spare", type=int, default=3000, help="extra users to seed")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    database = f"participation_bench_sql_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn_for("postgres"))
    await admin.execute(f"CREATE DATABASE {database}")
    try:
        await run(dsn_for(database), sizes, args)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.close()


async def run(dsn: str, sizes: list[int], args: argparse.Namespace) -> None:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    hot = 2 * HOT_CALLERS * args.hot_joins
    need = sum(2 * n + 4 * (args.calls + 10) for n in sizes) + hot + args.spare
    users = await seed_users(conn, need)
    seeder = Seeder(conn, users)
    seeded = [await seeder.sized(n) for n in sizes]
    hot_activity = await seeder.activity(1_000_000, [], [])
    spread = [await seeder.activity(1_000_000, [], []) for _ in range(SPREAD_OVER)]
    await conn.execute("ANALYZE")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    version = await conn.fetchval("SHOW server_version")
    print(f"PostgreSQL {version}, one connection, {args.calls} calls per row and size, medians; "
          f"{os.cpu_count()} CPUs shared with the benchmark")
    results = {s.n: await measure(conn, pid, s, users, args.calls) for s in seeded}
    print("\n".join(table(sizes, results)))
    pool = await asyncpg.create_pool(dsn, min_size=HOT_CALLERS, max_size=HOT_CALLERS)
    spread_rate = await joins_per_second(pool, spread, users, args.hot_joins)
    hot_rate = await joins_per_second(pool, [hot_activity], users, args.hot_joins)
    await pool.close()
    print(f"\n{HOT_CALLERS} callers, {HOT_CALLERS * args.hot_joins} joins each way: "
          f"spread over {SPREAD_OVER} activities {spread_rate:.0f} joins/s, one hot activity "
          f"{hot_rate:.0f} joins/s: hot = {hot_rate / spread_rate:.2f}x spread")
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
