"""A process's side of participation events, started and stopped by the App as one part."""

from __future__ import annotations

from participation_grpc.db import Database
from participation_grpc.listener import EventListener
from participation_grpc.relay import Relay
from participation_grpc.retention import Retention
from participation_grpc.settings import Settings
from participation_grpc.watch import Watchers


class Events:
    """The one LISTEN connection, the streams it wakes, retention, and (with EVENTS_STREAM) a
    candidate for relaying to Redis."""

    def __init__(self, settings: Settings, db: Database) -> None:
        assert settings.database_url is not None
        self.listener = EventListener(settings.database_url, settings.events_poll_seconds)
        self.watchers = Watchers(db, self.listener)
        self.retention = Retention(
            db, settings.event_retention_days, relayed_only=settings.events_stream is not None
        )
        self.relay: Relay | None = None
        if settings.events_stream is not None and settings.relay_redis_url is not None:
            self.relay = Relay(
                settings.database_url,
                settings.relay_redis_url,
                settings.events_stream,
                election_seconds=settings.relay_election_seconds,
                poll_seconds=settings.events_poll_seconds,
                redis_timeout_seconds=settings.redis_timeout_seconds,
            )

    def start(self) -> None:
        self.listener.start()
        self.retention.start()
        if self.relay is not None:
            self.relay.start()

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        await self.retention.stop()
        await self.listener.stop()
