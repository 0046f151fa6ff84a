"""What the procedures cost in PostgreSQL alone: bare asyncpg, no gRPC (run by `make bench`).

`.venv/bin/python bench/sql.py --calls 200 --sizes 100,10000` prints, in one run:
- each operation's median at every size and the growth from the smallest to the largest size
  (a row's median is of one step: join + leave is the pair, the others one call);
- the PostgreSQL backend's CPU per procedure call (from /proc, so only when the server is on this
  machine): for join + leave, per join or leave call, the pair's CPU halved;
- joins per second of 32 callers on one activity (hot) against 32 callers spread over 200.

`--against DIR` measures another version of the SQL beside this one (DIR holds its `sql/`, e.g.
`git archive HEAD~1 sql | tar -x -C DIR`), each in a database of its own, the two alternating step
by step and run by run, so that both meet the same load on a shared machine: a before/after
comparison in one run. It prints both tables and the ratios.
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
from importlib.resources.abc import Traversable
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
ROWS = (
    "join + leave (open activity)",
    "join + leave with request_id",
    "leave that promotes the waitlist's head",
    "join onto the waitlist",
    "ListParticipants, first page of 50",
    "ListWaitlist, first page of 50",
)


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
        taken = self.ids[self._next : self._next + n]
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

    async def activity(
        self, seats: int, registered: list[uuid.UUID], waitlisted: list[uuid.UUID]
    ) -> uuid.UUID:
        """A published public activity next week; its organizer in the first seat, then
        `registered` members and `waitlisted` users in joining order, counters true."""
        activity = uuid.uuid4()
        await self.conn.execute(
            """INSERT INTO activity.activities (activity_id, organizer_user_id, title, status,
                   scheduled_at, max_participants, current_participants_count, waitlist_count)
               VALUES ($1, $2, 'Bench', 'published', now() + interval '7 days', $3, $4, $5)""",
            activity,
            self.organizer,
            seats,
            len(registered) + 1,
            len(waitlisted),
        )
        start = datetime.now(UTC) - timedelta(days=1)
        await self.conn.copy_records_to_table(
            "participants",
            schema_name="activity",
            columns=["activity_id", "user_id", "role", "participation_status", "joined_at"],
            records=[(activity, self.organizer, "organizer", "registered", start)]
            + [
                (activity, u, "member", "registered", start + timedelta(seconds=i + 1))
                for i, u in enumerate(registered)
            ],
        )
        await self.conn.copy_records_to_table(
            "waitlist_entries",
            schema_name="activity",
            columns=["activity_id", "user_id", "position", "created_at"],
            records=[
                (activity, u, i + 1, start + timedelta(hours=1, seconds=i)) for i, u in enumerate(waitlisted)
            ],
        )
        return activity

    async def sized(self, n: int) -> Sized:
        members = self.users.take(n - 1)
        open_activity = await self.activity(n + 100_000, members, [])
        waiting = self.users.take(n)
        full_activity = await self.activity(n, members, waiting)
        return Sized(n, self.organizer, open_activity, full_activity, deque(members), deque(waiting))


async def seed_users(conn: asyncpg.Connection, count: int) -> Users:
    ids = [uuid.uuid4() for _ in range(count)]
    await conn.copy_records_to_table(
        "users",
        schema_name="activity",
        columns=["user_id", "email", "username", "password_hash", "first_name", "last_name"],
        records=[(u, f"{u.hex}@bench.test", f"u{u.hex}", "x", "Bench", "User") for u in ids],
    )
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

    def reset(self) -> None:
        self.cpu_ns, self.calls = 0, 0

    def cpu_ms_per_call(self) -> float | None:
        return None if self.cpu_ns is None else self.cpu_ns / 1e6 / self.calls


async def row(
    calls: int, probes: list[Probe], steps: list[Callable[[], Awaitable[float]]]
) -> list[tuple[float, float | None]]:
    """For each probe and its step: median ms of `calls` steps after a warm-up, and PostgreSQL
    CPU ms per measured call. With several, they take turns step by step."""
    for _ in range(5):
        for step in steps:
            await step()
    for probe in probes:
        probe.reset()
    spent: list[list[float]] = [[] for _ in steps]
    for _ in range(calls):
        for times, step in zip(spent, steps, strict=True):
            times.append(await step())
    return [
        (statistics.median(times) * 1000, probe.cpu_ms_per_call())
        for times, probe in zip(spent, probes, strict=True)
    ]


@dataclass
class Setup:
    """One version of the SQL in a database of its own, seeded the same way as the other."""

    label: str
    dsn: str
    conn: asyncpg.Connection
    users: Users
    probe: Probe
    seeded: dict[int, Sized]
    hot_activity: uuid.UUID
    spread: list[uuid.UUID]


def steps(setup: Setup, s: Sized) -> list[Callable[[], Awaitable[float]]]:
    """The rows' steps for one size. Every step puts the activity back as it found it (a leaver
    joins again, a joiner leaves again), outside the measured calls, so each call meets N."""
    conn, probe, users = setup.conn, setup.probe, setup.users

    async def join_leave() -> float:
        user = users.take()[0]
        return await probe(JOIN, s.open_activity, user) + await probe(LEAVE, s.open_activity, user)

    async def keyed_join_leave() -> float:
        user = users.take()[0]
        return await probe(JOIN_KEYED, s.open_activity, user, uuid.uuid4()) + await probe(
            LEAVE_KEYED, s.open_activity, user, uuid.uuid4()
        )

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

    return [join_leave, keyed_join_leave, promoting_leave, waitlisted_join, participants, waitlist]


async def measure(setups: list[Setup], sizes: list[int], calls: int) -> list[dict[int, Measured]]:
    """Every row at every size for each setup, the setups taking turns step by step."""
    results: list[dict[int, Measured]] = [{n: Measured() for n in sizes} for _ in setups]
    probes = [setup.probe for setup in setups]
    for n in sizes:
        per_setup = [steps(setup, setup.seeded[n]) for setup in setups]
        for i, name in enumerate(ROWS):
            measured = await row(calls, probes, [mine[i] for mine in per_setup])
            for out, (median, cpu) in zip(results, measured, strict=True):
                out[n].median_ms[name], out[n].cpu_ms[name] = median, cpu
    return results


async def joins_per_second(
    pool: asyncpg.Pool, activities: list[uuid.UUID], users: Users, per_caller: int
) -> float:
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
    cpu_head = " | ".join(f"PG CPU per call, N = {n:,}" for n in sizes)
    yield f"| Operation | {head} | growth | {cpu_head} |"
    yield "|---|" + "---|" * (2 * len(sizes) + 1)
    for row in ROWS:
        medians = [results[n].median_ms[row] for n in sizes]
        cpu = [results[n].cpu_ms[row] for n in sizes]
        yield (
            f"| {row} | "
            + " | ".join(f"{m:.2f} ms" for m in medians)
            + f" | {medians[-1] / medians[0]:.2f}x | "
            + " | ".join("n/a" if c is None else f"{c:.3f} ms" for c in cpu)
            + " |"
        )


def ratios(sizes: list[int], after: dict[int, Measured], before: dict[int, Measured]) -> Iterator[str]:
    """This tree against --against, row by row: median and PostgreSQL CPU, after / before."""
    head = " | ".join(f"median, N = {n:,} | PG CPU, N = {n:,}" for n in sizes)
    yield f"| this tree / against | {head} |"
    yield "|---|" + "---|" * (2 * len(sizes))
    for row in ROWS:
        cells = []
        for n in sizes:
            cells.append(f"{after[n].median_ms[row] / before[n].median_ms[row]:.2f}x")
            a, b = after[n].cpu_ms[row], before[n].cpu_ms[row]
            cells.append("n/a" if a is None or b is None else f"{a / b:.2f}x")
        yield f"| {row} | " + " | ".join(cells) + " |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,10000", help="N: members (and waitlisted)")
    parser.add_argument("--calls", type=int, default=200, help="measured calls per row and size")
    parser.add_argument("--hot-joins", type=int, default=60, help="joins per caller, hot/spread")
    parser.add_argument(
        "--hot-runs",
        type=int,
        default=1,
        help="hot/spread runs per setup (taking turns), the median ratio kept",
    )
    parser.add_argument("--spare", type=int, default=3000, help="extra users to seed")
    parser.add_argument("--against", type=Path, help="a directory holding another version's sql/")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    sources: list[tuple[str, Traversable | None]] = [("this tree", None)]
    if args.against:
        sources.append((f"against {args.against}", args.against / "sql"))
    admin = await asyncpg.connect(dsn_for("postgres"))
    databases = [f"participation_bench_sql_{uuid.uuid4().hex[:8]}" for _ in sources]
    try:
        setups = []
        for database, (label, sql) in zip(databases, sources, strict=True):
            await admin.execute(f"CREATE DATABASE {database}")
            setups.append(await prepare(dsn_for(database), label, sql, sizes, args))
        await run(setups, sizes, args)
        for setup in setups:
            await setup.conn.close()
    finally:
        for database in databases:
            await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.close()


async def prepare(
    dsn: str, label: str, sql: Traversable | None, sizes: list[int], args: argparse.Namespace
) -> Setup:
    await (migrate(dsn) if sql is None else migrate(dsn, sql=sql))
    conn = await asyncpg.connect(dsn)
    hot = 2 * HOT_CALLERS * args.hot_joins * args.hot_runs
    need = sum(2 * n + 4 * (args.calls + 10) for n in sizes) + hot + args.spare
    users = await seed_users(conn, need)
    seeder = Seeder(conn, users)
    seeded = {n: await seeder.sized(n) for n in sizes}
    hot_activity = await seeder.activity(1_000_000, [], [])
    spread = [await seeder.activity(1_000_000, [], []) for _ in range(SPREAD_OVER)]
    await conn.execute("ANALYZE")
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    return Setup(label, dsn, conn, users, Probe(conn, pid), seeded, hot_activity, spread)


async def run(setups: list[Setup], sizes: list[int], args: argparse.Namespace) -> None:
    version = await setups[0].conn.fetchval("SHOW server_version")
    print(
        f"PostgreSQL {version}, one connection, {args.calls} calls per row and size, medians; "
        f"{os.cpu_count()} CPUs shared with the benchmark"
    )
    results = await measure(setups, sizes, args.calls)
    for setup, result in zip(setups, results, strict=True):
        if len(setups) > 1:
            print(f"\n{setup.label}:")
        print("\n".join(table(sizes, result)))
    if len(setups) > 1:
        print()
        print("\n".join(ratios(sizes, results[0], results[1])))
    rates: list[list[tuple[float, float]]] = [[] for _ in setups]
    print()
    for turn in range(args.hot_runs):
        order = list(enumerate(setups))
        for i, setup in order if turn % 2 == 0 else reversed(order):
            # One pool open at a time: the machine's PostgreSQL is shared.
            async with asyncpg.create_pool(setup.dsn, min_size=HOT_CALLERS, max_size=HOT_CALLERS) as pool:
                spread_rate = await joins_per_second(pool, setup.spread, setup.users, args.hot_joins)
                hot_rate = await joins_per_second(pool, [setup.hot_activity], setup.users, args.hot_joins)
            rates[i].append((spread_rate, hot_rate))
    for setup, runs in zip(setups, rates, strict=True):
        if not runs:
            continue
        spread_rate, hot_rate = sorted(runs, key=lambda r: r[1] / r[0])[len(runs) // 2]
        label = f" ({setup.label})" if len(setups) > 1 else ""
        each = ", ".join(f"{h / s:.2f}x" for s, h in runs)
        print(
            f"{HOT_CALLERS} callers, {HOT_CALLERS * args.hot_joins} joins each way{label}: "
            f"spread over {SPREAD_OVER} activities {spread_rate:.0f} joins/s, one hot activity "
            f"{hot_rate:.0f} joins/s: hot = {hot_rate / spread_rate:.2f}x spread"
            + (f" (median of {len(runs)} runs: {each})" if len(runs) > 1 else "")
        )


if __name__ == "__main__":
    asyncio.run(main())
