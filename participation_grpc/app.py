"""Composition root and lifecycle: the one place that knows every part, starts and stops them."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from participation_grpc import memory, reflection
from participation_grpc.auth import TokenVerifier
from participation_grpc.db import Database, Limits, QueryLogger
from participation_grpc.events import Events
from participation_grpc.health import SERVICE_NAME, DatabaseHealth, DatabaseProbe
from participation_grpc.paging import PageTokens
from participation_grpc.pipeline import AuthStep, LimitStep, Pipeline, Step
from participation_grpc.ratelimit import Limiter, build_limiter
from participation_grpc.replays import ReplayCheck, reply_pruner
from participation_grpc.servicer import ParticipationServicer
from participation_grpc.settings import ConfigError, Settings
from participation_grpc.telemetry import Telemetry
from participation_grpc.v1 import participation_pb2_grpc

log = logging.getLogger(__name__)
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Answered during shutdown too, without a token: load balancers must see NOT_SERVING.
PUBLIC_SERVICES = (HEALTH, reflection.V1, reflection.V1ALPHA)
_STOP_SECONDS = 1.0  # for the public calls (health checks) still running when the port closes


class App:
    """The gRPC server with its pipeline, health, reflection and graceful shutdown. Built and
    run by `running()`; its parts are attributes so tests can look at them."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.probe = DatabaseProbe(settings.database_url)
        self.health = DatabaseHealth(self.probe)
        self.limiter: Limiter | None = build_limiter(settings) if settings.rate_limit_enabled else None
        self.events = Events(settings, db)
        steps: list[Step] = [AuthStep(TokenVerifier(settings))]
        if self.limiter is not None:
            steps.append(LimitStep(self.limiter, exempt=ReplayCheck(db)))
        self.replies = reply_pruner(db)
        self.telemetry = Telemetry(settings)
        self.pipeline = Pipeline(
            steps,
            max_concurrent=settings.grpc_max_concurrent_rpcs,
            public_services=PUBLIC_SERVICES,
            observers=self.telemetry.observers,
        )
        # Servicers register with the pipeline as they would with a server (it has the two
        # registration methods); the server only ever sees the wrapped handlers.
        registrar: Any = self.pipeline
        participation_pb2_grpc.add_ParticipationServiceServicer_to_server(
            ParticipationServicer(db, PageTokens(_page_token_key(settings)), self.events.watchers), registrar
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        reflection.add_to(self.pipeline, (SERVICE_NAME, HEALTH))
        self.server = grpc.aio.server(
            handlers=[self.pipeline.generic_handler()], options=server_options(settings)
        )
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            if settings.tls is not None:  # TLS_CERT_FILE and TLS_KEY_FILE (and TLS_CLIENT_CA_FILE)
                self.port = self.server.add_secure_port(address, settings.tls.server_credentials())
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpc says only "Failed to bind": the usual cause is a taken port
            raise ConfigError(
                f"GRPC_PORT: cannot listen on {address} (is another process using the port?)"
            ) from None
        self._watch: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.settings.grpc_host in ("0.0.0.0", "") else self.settings.grpc_host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        self.events.start()
        self.telemetry.start(self.db)
        self.replies.start()
        await self.server.start()
        await self.health.refresh()
        self._watch = asyncio.create_task(self.health.watch_database())
        log.info("serving %s on %s:%d", SERVICE_NAME, self.settings.grpc_host, self.port)

    async def stop(self) -> None:
        """Health turns NOT_SERVING and new calls get SHUTTING_DOWN while the server still
        answers; after SHUTDOWN_PAUSE_SECONDS (load balancers notice) streams end with
        SHUTTING_DOWN and calls in flight get SHUTDOWN_GRACE_SECONDS to finish (the rest are
        answered SHUTTING_DOWN); only then does the port close, with nothing left to cut.
        Asked twice, it stops once."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        settings = self.settings
        await self.health.enter_graceful_shutdown()
        self.pipeline.refuse_new_calls()
        if self._watch is not None:
            self._watch.cancel()
        await asyncio.sleep(settings.shutdown_pause_seconds)
        self.pipeline.end_streams()
        if not await self.pipeline.settled(settings.shutdown_grace_seconds):
            ended = self.pipeline.end_all()
            log.warning("grace period over: %d calls still in flight answered SHUTTING_DOWN", ended)
            await self.pipeline.settled(_STOP_SECONDS)
        await self.server.stop(_STOP_SECONDS)
        await self.events.stop()
        await self.replies.stop()
        self.probe.close()
        if self.limiter is not None:
            await self.limiter.close()
        await self.telemetry.stop()


@asynccontextmanager
async def running(settings: Settings, query_logger: QueryLogger | None = None) -> AsyncIterator[App]:
    """The service for as long as the block runs: pool, server, health watcher and limiter,
    then (also after an exception) the graceful stop and the pool's close. `serve`, `dev` and
    the tests all enter it; each worker process of a supervisor enters it once."""
    if not settings.database_url:
        raise ConfigError("DATABASE_URL is required")
    if not settings.redis_url and settings.is_production and settings.rate_limit_enabled:
        log.warning("REDIS_URL is unset: rate limits are enforced per replica, not shared")
    db = await Database.connect(
        settings.database_url,
        settings.db_pool_min_size,
        settings.db_pool_max_size,
        Limits.from_settings(settings),
        query_logger,
    )
    try:
        app = App(settings, db)
        try:
            await app.start()
            yield app
        finally:
            await app.stop()
    finally:
        await db.close()


async def serve(settings: Settings, on_ready: Callable[[App], None] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then drain and exit 0. `on_ready` runs once the server
    listens (the dev command prints its banner there)."""
    memory.return_freed_memory()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running(settings) as app:
            if on_ready is not None:
                on_ready(app)
            await stop.wait()
            log.info("shutting down: NOT_SERVING, then draining calls in flight")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """grpc's channel arguments for the load limits (contract section 6)."""
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        # Long-lived HTTP/2 connections are closed now and then, so clients spread over replicas
        # again; calls (and streams) on them get the grace period to finish.
        ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.grpc_max_connection_age_grace_seconds * 1000)),
        ("grpc.keepalive_time_ms", int(settings.grpc_keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.grpc_keepalive_timeout_seconds * 1000)),
        # Clients' keepalive pings are answered, also on idle connections and as often as every
        # 10 s (grpc's default would close a connection pinged more often than every 5 minutes).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _CLIENT_PING_MS),
        # WORKERS processes bind the same port; the kernel spreads connections over them. A
        # single process binds it alone (grpc's default would share it): a second server started
        # on a taken port, such as another checkout's `make run`, fails instead of silently
        # taking half of the first one's connections.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]


_CLIENT_PING_MS = 10_000


def _page_token_key(settings: Settings) -> bytes:
    """The same on every replica. Without PAGE_TOKEN_SECRET under RS256/ES256 it comes from the
    public key: tokens are then checked for integrity but could be forged, which only moves the
    start of the forger's own page (the position is bound as typed SQL parameters)."""
    if settings.page_token_secret:
        return settings.page_token_secret.encode()
    return (settings.jwt_public_key or settings.jwt_secret_key).encode()
