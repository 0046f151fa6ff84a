"""Composition root: the one place that knows every part and wires them into a server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from participation_grpc.auth import TokenVerifier
from participation_grpc.db import Database
from participation_grpc.health import SERVICE_NAME, DatabaseHealth
from participation_grpc.interceptors import (
    AuthInterceptor,
    DrainInterceptor,
    ErrorInterceptor,
    RateLimitInterceptor,
)
from participation_grpc.paging import PageTokens
from participation_grpc.ratelimit import Limiter, build_limiter
from participation_grpc.servicer import ParticipationServicer
from participation_grpc.settings import Settings
from participation_grpc.v1 import participation_pb2, participation_pb2_grpc

log = logging.getLogger(__name__)


class App:
    """The gRPC server with its health, reflection and graceful shutdown."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.drain = DrainInterceptor()
        self.health = DatabaseHealth(db)
        self._watch: asyncio.Task[None] | None = None
        self.limiter: Limiter | None = (
            build_limiter(settings) if settings.rate_limit_enabled else None)
        interceptors: list[grpc.aio.ServerInterceptor] = [
            ErrorInterceptor(),
            self.drain,
            AuthInterceptor(TokenVerifier(settings)),
        ]
        if self.limiter is not None:
            # After auth: budgets belong to the token's user, and bad tokens spend none.
            interceptors.append(RateLimitInterceptor(self.limiter))
        self.server = grpc.aio.server(interceptors=interceptors)
        participation_pb2_grpc.add_ParticipationServiceServicer_to_server(
            ParticipationServicer(db, PageTokens(_page_token_key(settings))), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((
            participation_pb2.DESCRIPTOR.services_by_name["ParticipationService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ), self.server, pool=_MethodAwarePool())
        self.port = self.server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")

    async def start(self) -> None:
        await self.server.start()
        await self.health.refresh()
        self._watch = asyncio.create_task(self.health.watch_database())
        log.info("serving %s on %s:%d", SERVICE_NAME, self.settings.grpc_host, self.port)

    async def stop(self) -> None:
        """Health turns NOT_SERVING and new calls get SHUTTING_DOWN while the server still
        answers (so clients and load balancers see why), in-flight calls get the grace period
        to finish, then the server closes."""
        await self.health.enter_graceful_shutdown()
        if self._watch is not None:
            self._watch.cancel()
        if not await self.drain.drain(self.settings.shutdown_grace_seconds):
            log.warning("grace period over: cancelling calls still in flight")
        await self.server.stop(0)
        if self.limiter is not None:
            await self.limiter.close()


def _page_token_key(settings: Settings) -> bytes:
    """The same on every replica. Without PAGE_TOKEN_SECRET under RS256/ES256 it comes from the
    public key: tokens are then checked for integrity but could be forged, which only moves the
    start of the forger's own page (the position is bound as typed SQL parameters)."""
    if settings.page_token_secret:
        return settings.page_token_secret.encode()
    return (settings.jwt_public_key or settings.jwt_secret_key).encode()


class _MethodAwarePool:
    """The default descriptor pool, also finding the file of a method name, which upb's pool
    does not: without it `grpcurl describe participation.v1.ParticipationService.JoinActivity`
    answers "Symbol not found"."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._pool.FindMethodByName(symbol).containing_service.file
