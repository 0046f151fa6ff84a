"""The relay to Redis Streams: out-of-order commits, per-activity order, outages, a killed relayer.

Events are written with activity.pa_event directly (the writer every procedure calls), so these
tests can hold transactions open and commit them in an order of their choosing.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from participation_grpc.relay import Relay
from participation_grpc.v1 import participation_pb2 as pb
from tests.conftest import serving, test_settings
from tests.network import free_port
from tests.redis_server import RedisServer, redis_url
from tests.test_metrics import scrape, value

DEADLINE_SECONDS = 60.0  # a guard against hanging, never a measure of speed


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until check() holds; fail (rather than hang) if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def write_event(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    activity_id: uuid.UUID,
    event_type: str = "joined",
) -> None:
    user = uuid.uuid4()
    await conn.execute("SELECT activity.pa_event($1, $2, $3, $3)", activity_id, event_type, user)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def stream_entries(client: aioredis.Redis, stream: str) -> list[dict[str, str]]:
    entries = await client.xrange(stream)
    assert entries is not None
    found = []
    for _, fields in entries:
        assert fields is not None
        found.append({_text(k): _text(v) for k, v in fields.items()})
    return found


async def relayed_ids(client: aioredis.Redis, stream: str) -> list[int]:
    return [int(e["event_id"]) for e in await stream_entries(client, stream)]


def first_occurrences(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    """What a consumer keeps after de-duplicating by event_id."""
    seen: set[str] = set()
    kept = []
    for entry in entries:
        if entry["event_id"] not in seen:
            seen.add(entry["event_id"])
            kept.append(entry)
    return kept


def assert_in_sequence_order(entries: list[dict[str, str]]) -> dict[str, list[int]]:
    """Per activity, the de-duplicated stream carries 1, 2, 3, ... in order."""
    by_activity: dict[str, list[int]] = {}
    for entry in first_occurrences(entries):
        by_activity.setdefault(entry["activity_id"], []).append(int(entry["sequence"]))
    for activity, sequences in by_activity.items():
        assert sequences == list(range(1, len(sequences) + 1)), activity
    return by_activity


@pytest.fixture
async def conns(database_url: str) -> AsyncIterator[list[asyncpg.Connection]]:
    opened = [await asyncpg.connect(database_url) for _ in range(3)]
    yield opened
    for conn in opened:
        await conn.close()


@pytest.fixture
async def shared_redis() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.Redis.from_url(redis_url())
    stream = f"participation.events.test.{uuid.uuid4().hex}"
    yield client, stream
    await client.delete(stream)
    await client.aclose()


async def test_relay_never_skips_an_event_that_commits_after_a_later_numbered_one(
    database_url: str, conns: list[asyncpg.Connection], shared_redis: tuple[aioredis.Redis, str]
) -> None:
    slow, fast, relay_conn = conns
    client, stream = shared_redis
    relay = Relay(database_url, redis_url(), stream)
    first, second = uuid.uuid4(), uuid.uuid4()
    try:
        late = slow.transaction()
        await late.start()
        await write_event(slow, first)  # draws the lower event_id, commits last
        await write_event(fast, second)  # draws the higher one, commits at once
        await relay.relay_batch(relay_conn)
        low, high = sorted(
            await slow.fetchval("SELECT array_agg(event_id) FROM activity.participation_events")
        )
        assert await relayed_ids(client, stream) == [high]
        await late.commit()
        await relay.relay_batch(relay_conn)
        assert await relayed_ids(client, stream) == [high, low]
        # Nothing more to send, and nothing sent twice however often it looks.
        await relay.relay_batch(relay_conn)
        assert await relayed_ids(client, stream) == [high, low]
    finally:
        await relay.stop()


async def test_relay_waits_for_a_transaction_newer_than_its_snapshot_knows(
    database_url: str, conns: list[asyncpg.Connection], shared_redis: tuple[aioredis.Redis, str]
) -> None:
    """The younger transaction (higher xid) draws the lower event id and commits last: a
    snapshot lists running xids only below its xmax, so the cursor must count every xid from
    there on as still running."""
    older_conn, younger_conn, relay_conn = conns
    client, stream = shared_redis
    relay = Relay(database_url, redis_url(), stream)
    try:
        older, younger = older_conn.transaction(), younger_conn.transaction()
        await older.start()
        await older_conn.execute("SELECT pg_current_xact_id()")
        await younger.start()
        await younger_conn.execute("SELECT pg_current_xact_id()")
        await write_event(younger_conn, uuid.uuid4())
        await write_event(older_conn, uuid.uuid4())
        await older.commit()
        await relay.relay_batch(relay_conn)
        assert len(await relayed_ids(client, stream)) == 1
        await younger.commit()
        await relay.relay_batch(relay_conn)
        assert sorted(await relayed_ids(client, stream)) == [1, 2]
    finally:
        await relay.stop()


async def pending(conn: asyncpg.Connection, xact: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT $1::xid8 = ANY (pending_xact_ids) FROM activity.participation_event_relay", xact
        )
    )


async def test_relay_forgets_transactions_that_rolled_back(
    database_url: str, conns: list[asyncpg.Connection], shared_redis: tuple[aioredis.Redis, str]
) -> None:
    doomed_conn, writer, relay_conn = conns
    client, stream = shared_redis
    relay = Relay(database_url, redis_url(), stream)
    try:
        doomed = doomed_conn.transaction()
        await doomed.start()
        await write_event(doomed_conn, uuid.uuid4())
        doomed_xact = await doomed_conn.fetchval("SELECT pg_current_xact_id()")
        await write_event(writer, uuid.uuid4())
        await relay.relay_batch(relay_conn)
        assert await pending(writer, doomed_xact)  # still running: looked at again next time
        await doomed.rollback()
        await write_event(writer, uuid.uuid4())
        await relay.relay_batch(relay_conn)
        assert len(await relayed_ids(client, stream)) == 2
        assert not await pending(writer, doomed_xact)
    finally:
        await relay.stop()


async def test_relay_carries_the_contract_fields(
    database_url: str, conns: list[asyncpg.Connection], shared_redis: tuple[aioredis.Redis, str]
) -> None:
    writer, _, relay_conn = conns
    client, stream = shared_redis
    relay = Relay(database_url, redis_url(), stream)
    activity, user = uuid.uuid4(), uuid.uuid4()
    try:
        await writer.execute(
            "SELECT activity.pa_event($1, 'waitlisted', $2, $2, $3::jsonb)",
            activity,
            user,
            '{"waitlist_position": 3}',
        )
        await writer.execute("SELECT activity.pa_event($1, 'promoted', $2, NULL)", activity, user)
        await relay.relay_batch(relay_conn)
        waitlisted, promoted = await stream_entries(client, stream)
        row = await writer.fetchrow(
            "SELECT event_id, occurred_at FROM activity.participation_events "
            "WHERE activity_id = $1 AND sequence = 1",
            activity,
        )
        assert row is not None
        assert waitlisted == {
            "event_id": str(row["event_id"]),
            "activity_id": str(activity),
            "sequence": "1",
            "event_type": "waitlisted",
            "user_id": str(user),
            "actor_user_id": str(user),
            "occurred_at": row["occurred_at"].isoformat(),
            "payload": '{"waitlist_position": 3}',
        }
        assert waitlisted["occurred_at"].endswith("+00:00")
        assert promoted["actor_user_id"] == "" and promoted["payload"] == "{}"
        assert promoted["sequence"] == "2"
    finally:
        await relay.stop()


async def test_concurrent_writers_reach_the_stream_once_each_in_sequence_order(
    database_url: str, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    """Writers on a few activities whose transactions overlap and commit in every order, while
    the relay keeps reading: each event arrives once, per activity as 1, 2, 3, ..."""
    client, stream = shared_redis
    relay = Relay(database_url, redis_url(), stream)
    activities = [uuid.uuid4() for _ in range(4)]
    rng = random.Random(11)
    pool = await asyncpg.create_pool(database_url, min_size=8, max_size=8)
    relay_conn = await asyncpg.connect(database_url)
    writing = True

    async def writer() -> None:
        for _ in range(25):
            async with pool.acquire() as conn, conn.transaction():
                # Draw an id, then let other transactions commit before this one does.
                await write_event(conn, rng.choice(activities))
                await asyncio.sleep(rng.random() / 200)

    async def relay_until_done() -> None:
        while writing:
            await relay.relay_batch(relay_conn)
            await asyncio.sleep(0.005)

    try:
        relaying = asyncio.create_task(relay_until_done())
        await asyncio.gather(*(writer() for _ in range(8)))
        writing = False
        await relaying
        await relay.relay_batch(relay_conn)
        entries = await stream_entries(client, stream)
        assert len(entries) == len({e["event_id"] for e in entries}) == 200
        assert sum(map(len, assert_in_sequence_order(entries).values())) == 200
    finally:
        await relay.stop()
        await relay_conn.close()
        await pool.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.remove()


async def outbox_backlog(conn: asyncpg.Connection) -> int:
    """Committed events the relay has not passed yet."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM activity.participation_events e, activity.participation_event_relay r "
            "WHERE e.event_id > r.last_event_id"
        )
    )


async def test_events_wait_in_the_outbox_while_redis_is_down(
    database_url: str, conns: list[asyncpg.Connection], private_redis: RedisServer
) -> None:
    writer = conns[0]
    stream = "participation.events"
    relay = Relay(
        database_url,
        private_redis.url,
        stream,
        election_seconds=0.1,
        poll_seconds=0.1,
        redis_timeout_seconds=0.5,
    )
    client = aioredis.Redis.from_url(private_redis.url)
    activity = uuid.uuid4()
    relay.start()
    try:
        for _ in range(3):
            await write_event(writer, activity)

        async def three_relayed() -> bool:
            return len(await relayed_ids(client, stream)) == 3

        await eventually(three_relayed, "the first events in the stream")

        private_redis.kill()
        for _ in range(5):
            await write_event(writer, activity)

        async def lag_shows() -> bool:
            return (relay.lag_seconds or 0) > 0 and await outbox_backlog(writer) == 5

        await eventually(lag_shows, "the relay reporting lag while events wait")

        private_redis.start()  # empty: a restarted server keeps nothing

        async def backlog_relayed() -> bool:
            try:
                return len(await relayed_ids(client, stream)) == 5
            except (OSError, aioredis.RedisError):
                return False

        await eventually(backlog_relayed, "the waiting events in the stream")
        entries = await stream_entries(client, stream)
        assert [int(e["sequence"]) for e in entries] == [4, 5, 6, 7, 8]

        async def caught_up() -> bool:  # the batch commits just after the XADD
            return await outbox_backlog(writer) == 0 and relay.lag_seconds == 0

        await eventually(caught_up, "the cursor past the backlog")
    finally:
        await relay.stop()
        await client.aclose()


RELAYER = """
import asyncio, sys
from participation_grpc.relay import Relay

async def main(dsn, url, stream):
    relay = Relay(dsn, url, stream, poll_seconds=0.1)
    relay.start()
    await relay.leading.wait()
    print("leading", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_killed_relayer_is_replaced_and_nothing_is_lost(
    database_url: str, conns: list[asyncpg.Connection], shared_redis: tuple[aioredis.Redis, str]
) -> None:
    writer = conns[0]
    client, stream = shared_redis
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RELAYER, database_url, redis_url(), stream, stdout=asyncio.subprocess.PIPE
    )
    assert first.stdout is not None
    assert (await asyncio.wait_for(first.stdout.readline(), DEADLINE_SECONDS)) == b"leading\n"
    standby = Relay(database_url, redis_url(), stream, election_seconds=0.1, poll_seconds=0.1)
    standby.start()
    activities = [uuid.uuid4() for _ in range(3)]
    written = 0

    async def write(n: int) -> None:
        nonlocal written
        for _ in range(n):
            await write_event(writer, activities[written % 3])
            written += 1

    async def all_relayed() -> bool:
        return set(await relayed_ids(client, stream)) >= set(range(1, written + 1))

    try:
        await write(30)
        await eventually(all_relayed, "the first relayer's events in the stream")
        assert not standby.leading.is_set()
        killing = asyncio.create_task(write(60))
        await asyncio.sleep(0)  # the kill lands while events are being written and relayed
        first.send_signal(signal.SIGKILL)
        await first.wait()
        await killing
        await standby.leading.wait()
        await eventually(all_relayed, "every event in the stream after the takeover")
        entries = await stream_entries(client, stream)
        assert sorted(int(e["event_id"]) for e in first_occurrences(entries)) == list(range(1, 91))
        assert_in_sequence_order(entries)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
        await standby.stop()


async def test_with_events_stream_set_the_service_relays_what_its_rpcs_write(
    database_url: str, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    client, stream = shared_redis
    settings = test_settings(
        database_url,
        events_stream=stream,
        redis_url=redis_url(),
        events_poll_seconds=0.1,
        relay_election_seconds=0.1,
    )
    async with serving(settings) as service:
        organizer, user = await service.seed.user(), await service.seed.user()
        activity = await service.seed.activity(organizer)
        await service.call("JoinActivity", user, pb.JoinActivityRequest(activity_id=str(activity)))

        async def relayed() -> bool:
            return len(await stream_entries(client, stream)) == 1

        await eventually(relayed, "the join in the Redis stream")
        (entry,) = await stream_entries(client, stream)
        assert (entry["event_type"], entry["user_id"], entry["sequence"]) == ("joined", str(user), "1")
        relay = service.app.events.relay
        assert relay is not None

        async def caught_up() -> bool:  # the batch commits just after the XADD
            return relay.lag_seconds == 0

        await eventually(caught_up, "the relay reporting no lag")


async def test_the_service_exports_the_relay_lag_while_redis_is_down_and_relays_on_return(
    database_url: str, private_redis: RedisServer
) -> None:
    stream, port = "participation.events", free_port()
    settings = test_settings(
        database_url,
        events_stream=stream,
        events_redis_url=private_redis.url,
        metrics_port=port,
        events_poll_seconds=0.1,
        relay_election_seconds=0.1,
    )
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        async with serving(settings) as service:
            relay = service.app.events.relay
            assert relay is not None
            await relay.leading.wait()

            async def lag() -> float:
                return value(await scrape(port), "participation_relay_lag_seconds")

            async def no_lag() -> bool:
                return relay.lag_seconds == 0 and await lag() == 0

            await eventually(no_lag, "a relay with nothing to do reporting no lag")

            private_redis.kill()
            organizer, user = await service.seed.user(), await service.seed.user()
            activity = await service.seed.activity(organizer)
            await service.call("JoinActivity", user, pb.JoinActivityRequest(activity_id=str(activity)))

            async def lag_exported() -> bool:
                return await lag() > 0

            await eventually(lag_exported, "participation_relay_lag_seconds above 0 on /metrics")

            private_redis.start()  # empty: a restarted server keeps nothing

            async def relayed() -> bool:
                try:
                    return len(await stream_entries(client, stream)) == 1
                except (OSError, aioredis.RedisError):
                    return False

            await eventually(relayed, "the waiting join in the Redis stream")
            (entry,) = await stream_entries(client, stream)
            assert (entry["event_type"], entry["user_id"]) == ("joined", str(user))
            await eventually(no_lag, "the lag back to 0 once the backlog is relayed")
    finally:
        await client.aclose()
