"""Glue between gRPC and the policies in errors, auth and ratelimit; no policy of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

from participation_grpc import errors
from participation_grpc.auth import TokenVerifier, current_caller
from participation_grpc.ratelimit import Limiter, limit_class

SERVICE_PREFIX = "/participation.v1.ParticipationService/"
# Strings: grpc's classes are generic in its type stubs only, not at run time.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Behaviour: TypeAlias = Callable[[Any, Context], Awaitable[Any]]


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Runs `around` around every unary call of ParticipationService (not health, reflection)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or handler.unary_unary is None or not method.startswith(SERVICE_PREFIX):
            return handler
        inner = cast(Behaviour, handler.unary_unary)
        name = method.removeprefix(SERVICE_PREFIX)

        async def call(request: Any, context: Context) -> Any:
            return await self.around(inner, request, context, name)

        # grpc's handlers are named tuples: swap the behaviour, keep the (de)serializers.
        return cast(Handler, handler._replace(unary_unary=call))  # type: ignore[attr-defined]

    async def around(self, inner: Behaviour, request: Any, context: Context,
                     method: str) -> Any:
        raise NotImplementedError


class ErrorInterceptor(UnaryInterceptor):
    """Outermost: every exception becomes a status with ErrorInfo (errors.classify decides)."""

    async def around(self, inner: Behaviour, request: Any, context: Context,
                     method: str) -> Any:
        try:
            return await inner(request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            status = errors.to_status(errors.classify(exc, method))
            await context.abort(status.code, status.details, status.trailing_metadata)


class DrainInterceptor(UnaryInterceptor):
    """Counts calls in flight; once draining, new calls are refused with SHUTTING_DOWN."""

    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def around(self, inner: Behaviour, request: Any, context: Context,
                     method: str) -> Any:
        if self.draining:
            raise errors.shutting_down()
        self._in_flight += 1
        self._idle.clear()
        try:
            return await inner(request, context)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def drain(self, grace_seconds: float) -> bool:
        """Refuse new calls and wait for those in flight; False if the grace period ran out."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
        except TimeoutError:
            return False
        return True


class AuthInterceptor(UnaryInterceptor):
    """Verifies the bearer token and makes its Caller current for the call."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def around(self, inner: Behaviour, request: Any, context: Context,
                     method: str) -> Any:
        authorization = next((str(v) for k, v in context.invocation_metadata() or ()
                              if k == "authorization"), None)
        token = current_caller.set(self._verifier.verify(authorization))
        try:
            return await inner(request, context)
        finally:
            current_caller.reset(token)


class RateLimitInterceptor(UnaryInterceptor):
    """Inside AuthInterceptor: charges the call to its caller's budget for the method's class."""

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter

    async def around(self, inner: Behaviour, request: Any, context: Context,
                     method: str) -> Any:
        caller = current_caller.get()
        decision = await self._limiter.acquire(str(caller.user_id), limit_class(method))
        if not decision.allowed:
            raise errors.rate_limited(decision.limit_class, decision.limit,
                                      decision.retry_after, str(caller.user_id))
        return await inner(request, context)
