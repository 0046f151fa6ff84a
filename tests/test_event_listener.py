"""The per-process LISTEN connection: notifications wake readers in every process, and a lost
notification or connection delays a reader by at most a poll interval."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from participation_grpc.listener import ANY_ACTIVITY, EventListener
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


async def woken(wake: asyncio.Event) -> None:
    await asyncio.wait_for(wake.wait(), DEADLINE_SECONDS)


async def test_a_commit_wakes_the_readers_of_that_activity_in_every_process(
        database_url: str, conn: asyncpg.Connection) -> None:
    """Two listeners stand for two replicas: each has its own LISTEN connection."""
    replicas = [await started(database_url, NO_POLL) for _ in range(2)]
    watched, other = uuid.uuid4(), uuid.uuid4()
    try:
        with replicas[0].subscribe(watched) as first, replicas[1].subscribe(watched) as second, \
                replicas[1].subscribe(other) as bystander, \
                replicas[1].subscribe(ANY_ACTIVITY) as relay:
            for wake in (first, second, bystander, relay):
                wake.clear()  # the wake-up every new connection gives
            await write_event(conn, watched)
            await woken(first)
            await woken(second)
            await woken(relay)
            assert not bystander.is_set()
    finally:
        for listener in replicas:
            await listener.stop()


async def test_a_rolled_back_change_wakes_nobody(database_url: str,
                                                 conn: asyncpg.Connection) -> None:
    listener = await started(database_url, NO_POLL)
    activity = uuid.uuid4()
    try:
        with listener.subscribe(activity) as wake:
            wake.clear()
            tx = conn.transaction()
            await tx.start()
            await write_event(conn, activity)
            await tx.rollback()
            with listener.subscribe(ANY_ACTIVITY) as probe:
                await write_event(conn, uuid.uuid4())
                await woken(probe)  # notifications come in order: any of the rollback's first
            assert not wake.is_set()
    finally:
        await listener.stop()


async def test_an_event_without_its_notification_is_found_by_the_poll(
        database_url: str, conn: asyncpg.Connection) -> None:
    listener = await started(database_url, poll_seconds=0.1)
    activity = uuid.uuid4()
    try:
        with listener.subscribe(activity) as wake:
            # As if the notification were lost: the rows change, nothing is sent.
            await conn.execute(
                "INSERT INTO activity.participation_event_counters VALUES ($1, 1)", activity)
            await woken(wake)
    finally:
        await listener.stop()


async def test_a_dropped_listen_connection_is_replaced_and_wakes_every_reader(
        database_url: str, conn: asyncpg.Connection) -> None:
    listener = await started(database_url, poll_seconds=0.1)
    activity = uuid.uuid4()
    try:
        with listener.subscribe(activity) as wake:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'participation-grpc listener' AND datname = current_database()")
            assert killed == 1
            await woken(wake)
            await asyncio.wait_for(listener.connected.wait(), DEADLINE_SECONDS)
            wake.clear()
            await write_event(conn, activity)
            await woken(wake)
    finally:
        await listener.stop()
