"""WORKERS=2: `serve` as a supervisor of two processes on one port, drained by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from participation_grpc.auth import mint_token
from participation_grpc.settings import ConfigError, Settings
from participation_grpc.v1 import participation_pb2 as pb
from participation_grpc.v1 import participation_pb2_grpc as pb_grpc
from tests.conftest import detail, test_settings
from tests.network import free_port
from tests.seed import Seed

BIN = Path(sys.executable).parent
CHANNELS = 32  # connections: the chance that all of them land on one of two workers is 2^-31
SUPERVISING = re.compile(r"\[(\d+)\] \S+: supervising 2 workers on 127\.0\.0\.1:(\d+)")
SERVING = re.compile(r"\[(\d+)\] \S+: worker (\d) serving on ")
SHUTTING_DOWN = re.compile(r"\[(\d+)\] \S+: shutting down")
DRAINED = re.compile(r"worker (\d) drained: (\d+) calls answered \((.*)\)")


@pytest.mark.parametrize(
    "environ,accepted",
    [
        ({"WORKERS": "2"}, False),  # rate limits are on by default
        ({"WORKERS": "2", "RATE_LIMIT_ENABLED": "true"}, False),
        ({"WORKERS": "2", "RATE_LIMIT_ENABLED": "false"}, True),
        ({"WORKERS": "2", "REDIS_URL": "redis://127.0.0.1:6379/0"}, True),
        ({"WORKERS": "1"}, True),
        ({"WORKERS": "0", "RATE_LIMIT_ENABLED": "false"}, False),
    ],
)
def test_workers_setting_needs_redis_while_rate_limits_are_on(
    environ: dict[str, str], accepted: bool
) -> None:
    if accepted:
        assert Settings.from_environ(environ).workers == int(environ["WORKERS"])
    else:
        with pytest.raises(ConfigError, match="WORKERS"):
            Settings.from_environ(environ)


async def test_serve_refuses_two_workers_without_redis_naming_workers(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "RATE_LIMIT_"))}
    env.update({"DATABASE_URL": database_url, "WORKERS": "2", "GRPC_PORT": "0"})
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "participation-grpc"),
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "WORKERS=2" in err.decode() and "REDIS_URL" in err.decode()


@dataclass
class Supervisor:
    """`participation-grpc serve` with WORKERS=2, and what its log lines said so far."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    port: int = 0
    workers: dict[int, int] = field(default_factory=dict)  # worker index -> pid

    async def read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self.changed:
                self.lines.append(raw.decode().rstrip())
                self.changed.notify_all()
        async with self.changed:
            self.lines.append("<EOF>")
            self.changed.notify_all()

    async def until(self, pattern: re.Pattern[str], count: int = 1) -> list[re.Match[str]]:
        """The first `count` lines matching, once they have been logged (or the log ended)."""
        async with self.changed:

            def found() -> list[re.Match[str]]:
                return [m for line in self.lines if (m := pattern.search(line))]

            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(found()) >= count or "<EOF>" in self.lines), 120
            )
            assert len(found()) >= count, "\n".join(self.lines)
            return found()[:count]

    def log(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def supervisor(database_url: str, **environ: str) -> AsyncIterator[Supervisor]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GRPC_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "WORKERS": "2",
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": "0",
            "RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "INFO",
            "SHUTDOWN_PAUSE_SECONDS": "1",
            # Not the default 9464: another server on the machine may hold it.
            "METRICS_PORT": str(free_port()),
            **environ,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "participation-grpc"), "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    started = Supervisor(proc)
    reader = asyncio.ensure_future(started.read())
    try:
        started.port = int((await started.until(SUPERVISING))[0][2])
        # Both workers listen before any connection is made, so both can be given some.
        for match in await started.until(SERVING, 2):
            started.workers[int(match[2])] = int(match[1])
        yield started
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await reader


def tallies(log: str) -> dict[int, Counter[str]]:
    """Each worker's last line: the calls it answered, as "Method CODE" -> count."""
    out: dict[int, Counter[str]] = {}
    for match in DRAINED.finditer(log):
        counts: Counter[str] = Counter()
        for part in filter(None, match[3].split(", ")):
            name, code, n = part.rsplit(" ", 2)
            counts[f"{name} {code}"] += int(n)
        assert sum(counts.values()) == int(match[2])
        out[int(match[1])] = counts
    return out


def outcome(exc: grpc.aio.AioRpcError) -> str:
    """A failed call as "CODE REASON"; "UNAVAILABLE port closed" when no server answered it
    (its worker had stopped listening). A call a worker did receive is in its tally."""
    info = detail(exc, error_details_pb2.ErrorInfo)
    if info is not None:
        return f"{exc.code().name} {info.reason}"
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return "UNAVAILABLE port closed"
    return f"{exc.code().name} {exc.details()}"


async def lock_waiters(conn: asyncpg.Connection, at_least: int) -> None:
    """Until that many of the service's connections to conn's database wait on a lock (a
    condition, bounded). pg_stat_activity shows the whole cluster: without the database, the
    servers of other suites running on the machine (lock tests of their own) counted too, and
    SIGTERM could come before this test had its calls in flight."""
    for _ in range(2000):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'participation-grpc' "
            "AND datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} service connections ever waited on a lock")


async def test_two_workers_share_the_port_and_drain_under_load_on_sigterm(database_url: str) -> None:
    """32 connections spread over the two workers, each joining users one after another. The
    activity's row is locked so calls are in flight in both workers when SIGTERM arrives; once
    both drain, the lock goes. The calls in flight are answered OK, later ones are refused
    SHUTTING_DOWN (or find the port closed): nothing CANCELLED, each OK join is one row and was
    counted by the worker that answered it, both workers answered some, and the supervisor
    exits 0."""
    conn = await asyncpg.connect(database_url)
    seed = Seed(conn)
    organizer = await seed.user()
    activity = await seed.activity(organizer, max_participants=100_000)
    users = [uuid.uuid4() for _ in range(800)]
    await conn.copy_records_to_table(
        "users",
        schema_name="activity",
        columns=["user_id", "email", "username", "password_hash", "first_name", "last_name"],
        records=[(u, f"{u.hex}@example.test", f"u{u.hex}", "x", "Test", "Tester") for u in users],
    )
    settings = test_settings(database_url)
    todo = iter(users)
    outcomes: Counter[str] = Counter()
    loaded, locked, signalled = asyncio.Event(), asyncio.Event(), asyncio.Event()
    ok_after_sigterm = 0

    # Waits are long so the held lock only delays the calls; the grace covers the whole drain.
    async with supervisor(
        database_url,
        SHUTDOWN_GRACE_SECONDS="60",
        DB_LOCK_TIMEOUT_MS="60000",
        DB_STATEMENT_TIMEOUT_MS="60000",
        DB_ACQUIRE_TIMEOUT_MS="60000",
    ) as sup:
        # A pool of its own per channel, so each channel is a connection of its own.
        channels = [
            grpc.aio.insecure_channel(
                f"127.0.0.1:{sup.port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(CHANNELS)
        ]

        async def joiner(channel: grpc.aio.Channel) -> None:
            nonlocal ok_after_sigterm
            stub = pb_grpc.ParticipationServiceStub(channel)
            for user in todo:
                token = mint_token(settings, user)
                try:
                    reply = await stub.JoinActivity(
                        pb.JoinActivityRequest(activity_id=str(activity)),
                        timeout=120,
                        metadata=(("authorization", f"Bearer {token}"),),
                    )
                except grpc.aio.AioRpcError as exc:
                    outcomes[outcome(exc)] += 1
                    return
                assert reply.participation_status == pb.PARTICIPATION_STATUS_REGISTERED
                outcomes["OK"] += 1
                ok_after_sigterm += signalled.is_set()
                if outcomes["OK"] >= 4 * CHANNELS:
                    loaded.set()
                    # No new call until the row is locked: the users left then no longer
                    # depend on how many joins the workers answer while the test locks it.
                    await locked.wait()

        load = [asyncio.ensure_future(joiner(c)) for c in channels]
        await asyncio.wait_for(loaded.wait(), 120)
        locker = await asyncpg.connect(database_url)
        lock = locker.transaction()
        await lock.start()
        await locker.execute("SELECT 1 FROM activity.activities WHERE activity_id = $1 FOR UPDATE", activity)
        locked.set()
        # More than one worker's share of connections per activity (a quarter of its pool of
        # 20) wait on the lock: calls are in flight in both workers.
        await lock_waiters(conn, 6)
        sup.proc.send_signal(signal.SIGTERM)
        signalled.set()
        shutting = await sup.until(SHUTTING_DOWN, 2)
        assert {int(m[1]) for m in shutting} == set(sup.workers.values())
        await lock.rollback()
        await locker.close()
        await asyncio.gather(*load)
        assert await asyncio.wait_for(sup.proc.wait(), 120) == 0, sup.log()
        for channel in channels:
            await channel.close()

    assert set(outcomes) <= {"OK", "UNAVAILABLE SHUTTING_DOWN", "UNAVAILABLE port closed"}, (
        outcomes,
        sup.log(),
    )
    assert outcomes["OK"] > 4 * CHANNELS
    # The calls seen waiting on the lock had been received: each was answered OK, not cut.
    assert ok_after_sigterm >= 6, outcomes
    joined = await conn.fetchval(
        "SELECT count(*) FROM activity.participants WHERE activity_id = $1 AND user_id <> $2",
        activity,
        organizer,
    )
    await conn.close()
    assert joined == outcomes["OK"]
    by_worker = tallies(sup.log())
    assert set(by_worker) == {1, 2}, sup.log()
    assert all(t["JoinActivity OK"] > 0 for t in by_worker.values()), by_worker
    assert sum(t["JoinActivity OK"] for t in by_worker.values()) == outcomes["OK"]
    assert not any(
        key.endswith((" CANCELLED", " UNKNOWN", " INTERNAL")) for t in by_worker.values() for key in t
    ), by_worker


async def test_a_worker_that_dies_stops_the_others_and_the_supervisor_exits_1(database_url: str) -> None:
    async with supervisor(database_url) as sup:
        os.kill(sup.workers[1], signal.SIGKILL)
        assert await asyncio.wait_for(sup.proc.wait(), 120) == 1
    log = sup.log()
    assert f"worker 1 (pid {sup.workers[1]}) died of SIGKILL: stopping the other workers" in log
    assert "worker 2 drained: " in log and "worker 1 drained" not in log


async def test_workers_drain_when_the_supervisor_is_killed(database_url: str) -> None:
    """SIGKILL leaves the supervisor no time to signal: its end of each worker's stdin closes,
    and that is the workers' signal to drain and exit."""
    async with supervisor(database_url) as sup:
        sup.proc.kill()
        drained = await sup.until(DRAINED, 2)  # stderr ends when the last worker has exited
    assert {int(m[1]) for m in drained} == {1, 2}
