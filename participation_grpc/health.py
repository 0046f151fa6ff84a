"""grpc.health.v1 answering from the database's reachability (SERVING / NOT_SERVING)."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
from grpc_health.v1 import health, health_pb2

from participation_grpc import errors

SERVICE_NAME = "participation.v1.ParticipationService"
# Worst case from the database freezing to NOT_SERVING: one interval plus one probe timeout;
# from its return to SERVING: one interval plus one connect. Both well inside the 5 s promised.
WATCH_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 1.5
log = logging.getLogger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseProbe:
    """Does the database answer? A function with a time to live: asked on a connection of its
    own (never waiting behind a busy pool), at most once per `ttl`, and callers asking while a
    probe runs share its answer."""

    def __init__(
        self, dsn: str | None, ttl: float = WATCH_INTERVAL_SECONDS, timeout: float = PROBE_TIMEOUT_SECONDS
    ) -> None:
        self._dsn = dsn
        self._ttl = ttl
        self._timeout = timeout
        self._connection: asyncpg.Connection | None = None
        self._answer = False
        self._answered_at: float | None = None
        self._probing: asyncio.Task[bool] | None = None

    async def reachable(self) -> bool:
        if self._answered_at is not None and time.monotonic() - self._answered_at < self._ttl:
            return self._answer
        if self._probing is None:
            self._probing = asyncio.create_task(self._probe())
        return await asyncio.shield(self._probing)

    async def _probe(self) -> bool:
        try:
            self._answer = await self._ask()
        finally:
            self._answered_at = time.monotonic()
            self._probing = None
        return self._answer

    async def _ask(self) -> bool:
        if self._dsn is None:
            return False
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(
                    self._dsn,
                    timeout=self._timeout,
                    server_settings={"application_name": "participation-grpc health"},
                )
            await self._connection.fetchval("SELECT 1", timeout=self._timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.close()
            return False
        return True

    def close(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None


class DatabaseHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """Check and Watch report the probe's answer (Check asks it, so it is at most a second old;
    a background watcher keeps Watch subscribers current). After shutdown begins, everything
    stays NOT_SERVING."""

    def __init__(self, probe: DatabaseProbe) -> None:
        super().__init__()
        self._probe = probe
        self._reachable: bool | None = None

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: object
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    async def List(
        self, request: health_pb2.HealthListRequest, context: object
    ) -> health_pb2.HealthListResponse:
        """Every name Check answers ("" and the service), with its status."""
        await self.refresh()
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )

    async def refresh(self) -> None:
        reachable = await self._probe.reachable()
        if reachable == self._reachable:
            return
        if reachable:
            log.info("database reachable: SERVING")
            errors.database_answers()
        else:
            log.warning("database unreachable: NOT_SERVING")
        self._reachable = reachable
        for service in ("", SERVICE_NAME):
            await self.set(service, _SERVING if reachable else _NOT_SERVING)

    async def watch_database(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
