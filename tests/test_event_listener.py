"""The per-process LISTEN connection: notifications wake readers in every process, only watched
activities notify at all, and a lost notification or connection delays a reader by at most a
poll interval."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import pytest

from participation_grpc.listener import EventListener
from tests.network import SilentAfterStartup
from tests.test_event_relay import DEADLINE_SECONDS, write_event

# Long enough that a wake-up inside a test comes from a notification, not from the poll.
NO_POLL = 3600.0


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    opened = await asyncpg.connect(database_url)
    yield opened
    await opened.close()


async def started(database_url: str, poll_seconds: float) -> EventListener:
    listener = EventListener(database_url, poll_seconds=poll_seconds)
    listener.start()
    await asyncio.wait_for(listener.connected.wait(), DEADLINE_SECONDS)
    return listener


async def lease(conn: asyncpg.Connection, listener: EventListener, activity: uuid.UUID) -> None:
    """What a stream does as it opens: writers on this activity now notify."""
    await conn.execute("SELECT activity.pa_watch_lease($1, $2, 60)", activity, listener.id)


async def woken(wake: asyncio.Event) -> None:
    await asyncio.wait_for(wake.wait(), DEADLINE_SECONDS)


async def test_a_commit_wakes_the_readers_of_that_activity_in_every_process(
    database_url: str, conn: asyncpg.Connection
) -> None:
    """Two listeners stand for two replicas: each has its own LISTEN connection."""
    replicas = [await started(database_url, NO_POLL) for _ in range(2)]
    watched, other = uuid.uuid4(), uuid.uuid4()
    try:
        with (
            replicas[0].subscribe(watched) as first,
            replicas[1].subscribe(watched) as second,
            replicas[1].subscribe(other) as bystander,
        ):
            for listener in replicas:
                await lease(conn, listener, watched)
            await lease(conn, replicas[1], other)
            for wake in (first, second, bystander):
                wake.clear()  # the wake-up every new connection gives
            await write_event(conn, watched)
            await woken(first)
            await woken(second)
            assert not bystander.is_set()
    finally:
        for listener in replicas:
            await listener.stop()


async def test_only_watched_activities_notify_and_rollbacks_notify_nobody(
    conn: asyncpg.Connection, database_url: str
) -> None:
    listener = await started(database_url, NO_POLL)
    watched, unwatched = uuid.uuid4(), uuid.uuid4()
    heard: list[str] = []
    raw = await asyncpg.connect(database_url)
    await raw.add_listener("participation_events", lambda *args: heard.append(args[3]))
    try:
        await lease(conn, listener, watched)
        tx = conn.transaction()
        await tx.start()
        await write_event(conn, watched)
        await tx.rollback()
        await write_event(conn, unwatched)
        with listener.subscribe(watched) as wake:
            wake.clear()
            await write_event(conn, watched)
            await woken(wake)
        await raw.execute("SELECT 1")  # notifications arrive in commit order, before this
        assert heard == [str(watched)]
    finally:
        await raw.close()
        await listener.stop()


async def test_the_poll_renews_the_leases_of_watched_activities_only(
    database_url: str, conn: asyncpg.Connection
) -> None:
    listener = await started(database_url, poll_seconds=0.05)
    activity = uuid.uuid4()

    async def expiry() -> datetime | None:
        expires_at: datetime | None = await conn.fetchval(
            "SELECT expires_at FROM activity.participation_event_watchers "
            "WHERE activity_id = $1 AND listener_id = $2",
            activity,
            listener.id,
        )
        return expires_at

    async def polls_later(count: int) -> None:
        target = listener.polls + count
        for _ in range(2000):  # a condition, not a delay: the listener's next polls ran
            if listener.polls >= target:
                return
            await asyncio.sleep(0.01)
        pytest.fail("the listener stopped polling")

    try:
        with listener.subscribe(activity):
            await polls_later(2)  # one may have begun before the subscription
            first = await expiry()
            await polls_later(2)
            renewed = await expiry()
        await polls_later(1)  # one may have begun before the stream went
        left = await expiry()
        await polls_later(2)
        assert first is not None and renewed is not None and renewed > first
        assert await expiry() == left  # unwatched: left to run out
    finally:
        await listener.stop()


async def test_an_event_without_its_notification_is_found_by_the_poll(
    database_url: str, conn: asyncpg.Connection
) -> None:
    listener = await started(database_url, poll_seconds=0.1)
    activity = uuid.uuid4()
    try:
        with listener.subscribe(activity) as wake:
            # As if the notification were lost: the rows change, nothing is sent.
            await conn.execute("INSERT INTO activity.participation_event_counters VALUES ($1, 1)", activity)
            await woken(wake)
    finally:
        await listener.stop()


async def test_a_dropped_listen_connection_is_replaced_and_wakes_every_reader(
    database_url: str, conn: asyncpg.Connection
) -> None:
    listener = await started(database_url, poll_seconds=NO_POLL)
    activity = uuid.uuid4()
    try:
        with listener.subscribe(activity) as wake:
            await lease(conn, listener, activity)
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'participation-grpc listener' AND datname = current_database()"
            )
            assert killed == 1
            await woken(wake)
            await asyncio.wait_for(listener.connected.wait(), DEADLINE_SECONDS)
            wake.clear()
            await write_event(conn, activity)
            await woken(wake)
    finally:
        await listener.stop()


async def test_a_listen_never_answered_is_given_up_and_tried_again(database_url: str) -> None:
    """The path to the database goes silent just after the listener's connection opened: its
    LISTEN is never answered, and the listener gives that connection up and opens another
    rather than waiting for an answer that may never come."""
    proxy = SilentAfterStartup(database_url)
    listener = EventListener(await proxy.start(), poll_seconds=NO_POLL)
    listener.start()
    try:
        await asyncio.wait_for(proxy.opened_at_least(2), DEADLINE_SECONDS)
        assert proxy.dropped > 0 and not listener.connected.is_set()
    finally:
        await listener.stop()
        await proxy.close()
