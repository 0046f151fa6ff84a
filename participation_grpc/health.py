"""grpc.health.v1 answering from the database's reachability (SERVING / NOT_SERVING)."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from participation_grpc.db import Database

SERVICE_NAME = "participation.v1.ParticipationService"
WATCH_INTERVAL_SECONDS = 5.0
log = logging.getLogger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """Check asks the database each time, so the answer is never stale; Watch subscribers are
    kept current by a background probe. After shutdown begins, everything stays NOT_SERVING."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db
        self._reachable: bool | None = None

    async def Check(self, request: health_pb2.HealthCheckRequest, context: object
                    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    async def refresh(self) -> None:
        reachable = await self._db.is_reachable()
        if reachable != self._reachable:
            log.log(logging.INFO if reachable else logging.WARNING,
                    "database %s", "reachable" if reachable else "unreachable: NOT_SERVING")
        self._reachable = reachable
        for service in ("", SERVICE_NAME):
            await self.set(service, _SERVING if reachable else _NOT_SERVING)

    async def watch_database(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
