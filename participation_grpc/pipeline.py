"""The one path every call takes: errors (outermost), observers, drain, auth, limits, handler.

Every handler kind goes through it: unary and server-streaming responses, unary and streaming
requests. It wraps the method handlers themselves (built once per method) instead of running a
chain of interceptors, so a call pays one extra coroutine frame, not one per step.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeAlias

import grpc

from participation_grpc import errors, metrics
from participation_grpc.auth import Caller, TokenVerifier, current_caller
from participation_grpc.errors import ServiceError
from participation_grpc.ratelimit import Limiter, limit_class

log = logging.getLogger(__name__)
# Strings: grpc's classes are generic in its type stubs only, not at run time.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
# After the drain has waited for calls in flight, it also waits until no call has arrived for
# this long: calls that grpc had received but not yet handed over are then answered, not cut.
SETTLE_SECONDS = 0.1


class _Undecodable:
    """What the request deserializer returns for a body that is not a valid message."""


UNDECODABLE = _Undecodable()


class Call:
    """One call as the steps and observers see it."""

    __slots__ = (
        "_task",
        "caller",
        "context",
        "ended",
        "inside",
        "method",
        "name",
        "request",
        "request_id",
        "span",
        "started",
        "streaming",
        "trace_id",
    )

    def __init__(self, method: str, context: Context, streaming: bool = False) -> None:
        self.method = method  # "/participation.v1.ParticipationService/JoinActivity"
        self.name = method.rsplit("/", 1)[-1]  # "JoinActivity"
        self.context = context
        self.streaming = streaming  # the server sends a stream of responses
        # The request message (a request stream: its iterator). Its own `request_id` field, on
        # write requests, is contract 10's idempotency key, not the logs' request_id below.
        self.request: Any = None
        self.caller: Caller | None = None  # set by the auth step
        self.started = time.monotonic()
        self.ended = False  # set when the server ends the call (shutdown), not the client
        # True while the handler's own code runs (not grpc sending a reply): the only time the
        # call may be cancelled from outside without cutting a message in half.
        self.inside = False
        self._task: asyncio.Task[Any] | None = None
        # Set by the observers (accesslog, tracing): what the access line and the span show.
        self.request_id = ""
        self.trace_id = ""
        self.span: Any = None


class Step(Protocol):
    """A check a guarded call passes before its handler: raise a ServiceError to refuse it.
    Runs once per call, also for a stream (so a stream is authenticated and counted once)."""

    async def admit(self, call: Call) -> None: ...


class Observer(Protocol):
    """Sees every call, guarded or public, refused or not (metrics, access logs, tracing).
    `finished` gets the code and ErrorInfo reason the caller saw ("" for OK)."""

    async def started(self, call: Call) -> None: ...

    def sent(self, call: Call) -> None:
        """A server stream sent one more message (generator handlers)."""

    def finished(self, call: Call, code: grpc.StatusCode, reason: str) -> None: ...


class AuthStep:
    """The bearer token's Caller, current for the handler (servicer reads current_caller)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def admit(self, call: Call) -> None:
        authorization = None
        for key, value in call.context.invocation_metadata() or ():
            if key == "authorization":
                authorization = str(value)
                break
        call.caller = self._verifier.verify(authorization)
        # The call runs in a task of its own, whose context dies with it: no reset needed.
        current_caller.set(call.caller)


class LimitStep:
    """After auth: budgets belong to the token's user, and bad tokens spend none. Calls that
    `exempt` names spend none either (replays of idempotent writes: replays.ReplayCheck)."""

    def __init__(self, limiter: Limiter, exempt: Callable[[Call], Awaitable[bool]] | None = None) -> None:
        self._limiter = limiter
        self._exempt = exempt

    async def admit(self, call: Call) -> None:
        assert call.caller is not None, "LimitStep runs after AuthStep"
        if self._exempt is not None and await self._exempt(call):
            return
        user = str(call.caller.user_id)
        decision = await self._limiter.acquire(user, limit_class(call.name))
        metrics.rate_limit_decision(decision.limit_class, decision.allowed)
        if not decision.allowed:
            raise errors.rate_limited(decision.limit_class, decision.limit, decision.retry_after, user)


class Pipeline:
    """Wraps every method handler; `guarded` services get drain, the concurrency limit and the
    steps, the others (health, reflection) only error mapping, observers and undecodable-body
    handling, so they keep answering while the server drains."""

    def __init__(
        self,
        steps: Iterable[Step],
        *,
        max_concurrent: int,
        public_services: Iterable[str] = (),
        observers: Iterable[Observer] = (),
    ) -> None:
        self.steps = list(steps)
        self.observers = list(observers)
        self.max_concurrent = max_concurrent
        self.draining = False
        self._public = frozenset(public_services)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_arrival = 0.0
        self._open: set[Call] = set()  # guarded calls in flight, for ending them at shutdown
        self._watching: set[Call] = set()  # open streams of public services (health Watch)
        self._handlers: dict[str, Handler | None] = {}
        self._inner: list[grpc.GenericRpcHandler] = []

    # -- registration ------------------------------------------------------------------------

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        """Stands in for the server when servicers register (add_*_to_server(servicer, pipeline))."""
        self._inner.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        for name, handler in handlers.items():
            self._handlers[f"/{service}/{name}"] = self.wrap(f"/{service}/{name}", handler)

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """The one handler the server gets: every lookup answers a wrapped handler."""
        return _Lookup(self)

    def lookup(self, details: grpc.HandlerCallDetails) -> Handler | None:
        method = details.method
        if method in self._handlers:
            return self._handlers[method]
        for inner in self._inner:
            handler = inner.service(details)
            if handler is not None:
                wrapped = self.wrap(method, handler)
                self._handlers[method] = wrapped  # methods of registered services only
                return wrapped
        return None

    def wrap(self, method: str, handler: Handler) -> Handler:
        guarded = method.split("/")[1] not in self._public
        deserialize = _tolerant(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, guarded, handler.unary_unary), deserialize, serialize
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, guarded, handler.unary_stream), deserialize, serialize
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, guarded, _reading(handler.stream_unary)), deserialize, serialize
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, guarded, _reading(handler.stream_stream)), deserialize, serialize
            )
        raise TypeError(f"{method}: a handler of no kind grpc knows")

    # -- one call ----------------------------------------------------------------------------

    def _unary(
        self, method: str, guarded: bool, inner: Callable[..., Awaitable[Any]], streaming: bool = False
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        if not inspect.iscoroutinefunction(inner):
            inner = _inline(inner)

        async def behaviour(request: Any, context: Context) -> Any:
            call = Call(method, context, streaming)
            code, reason = grpc.StatusCode.OK, ""
            told = False
            try:
                await self._enter(call, request, guarded)
                call.inside = True
                try:
                    return await inner(request, context)
                finally:
                    call.inside = False
                    self._leave(call)
            except BaseException as exc:
                error = self._error(call, exc)
                if error is None:
                    code = _passed_code(call, exc)
                    raise
                code, reason = error.code, error.reason
                self._finished(call, code, reason)  # before the caller sees the status
                told = True
                await _abort(context, error)
            finally:
                if not told:
                    self._finished(call, code, reason)

        return behaviour

    def _stream(self, method: str, guarded: bool, inner: Callable[..., Any]) -> Callable[[Any, Context], Any]:
        """Server streaming: the same steps once when the stream opens, errors mapped while it
        runs, and ended with UNAVAILABLE SHUTTING_DOWN when the server drains."""
        if inspect.isasyncgenfunction(inner):

            async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
                call = Call(method, context, streaming=True)
                code, reason = grpc.StatusCode.OK, ""
                told = False
                try:
                    await self._enter(call, request, guarded)
                    responses = inner(request, context)
                    try:
                        while not call.ended:
                            call.inside = True
                            try:
                                message = await responses.__anext__()
                            except StopAsyncIteration:
                                break
                            finally:
                                call.inside = False
                            for observer in self.observers:
                                observer.sent(call)
                            yield message
                        else:  # ended while grpc was sending the last message
                            raise errors.shutting_down()
                    finally:
                        await responses.aclose()
                        self._leave(call)
                except BaseException as exc:
                    error = self._error(call, exc)
                    if error is None:
                        code = _passed_code(call, exc)
                        raise
                    code, reason = error.code, error.reason
                    self._finished(call, code, reason)  # before the caller sees it
                    told = True
                    await _abort(context, error)
                finally:
                    if not told:
                        self._finished(call, code, reason)

            return generator
        if inspect.iscoroutinefunction(inner):  # the handler writes with context.write()
            return self._unary(method, guarded, inner, streaming=True)
        raise TypeError(f"{method}: only async handlers can run in this server")

    async def _enter(self, call: Call, request: Any, guarded: bool) -> None:
        call.request = request
        for observer in self.observers:
            await observer.started(call)
        if request is UNDECODABLE:
            raise errors.undecodable(call.method)
        if not guarded:
            if call.streaming:  # kept only to be ended at shutdown
                call._task = asyncio.current_task()
                self._watching.add(call)
            return
        if self.draining:
            raise errors.shutting_down()
        if self._in_flight >= self.max_concurrent:
            raise errors.overloaded(self.max_concurrent)
        self._in_flight += 1
        self._idle.clear()
        self._last_arrival = call.started
        call._task = asyncio.current_task()
        self._open.add(call)
        try:
            for step in self.steps:
                await step.admit(call)
        except BaseException:
            self._leave(call)
            raise

    def _finished(self, call: Call, code: grpc.StatusCode, reason: str) -> None:
        """Tells the observers how the call ended. For a refusal that is before its status goes
        out, so the access line and the counters are never behind what the caller saw."""
        for observer in self.observers:
            observer.finished(call, code, reason)

    def _leave(self, call: Call) -> None:
        self._watching.discard(call)
        if call in self._open:
            self._open.discard(call)
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    def _error(self, call: Call, exc: BaseException) -> ServiceError | None:
        """The status to answer for `exc`; None when it must pass through untouched (the handler
        answered itself with abort, the client went away, the generator is being closed)."""
        if isinstance(exc, asyncio.CancelledError) and call.ended:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cancellation (shutdown): answer it, do not die of it
            return errors.shutting_down()
        if isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception):
            return None
        return errors.classify(exc, call.name)

    # -- shutdown ----------------------------------------------------------------------------

    def refuse_new_calls(self) -> None:
        self.draining = True

    def end_streams(self) -> int:
        """Ends every open stream with SHUTTING_DOWN (a stream does not finish on its own)."""
        return self._end(lambda call: call.streaming)

    def end_all(self) -> int:
        """Ends every guarded call still running with SHUTTING_DOWN (the grace period is over);
        its database work is cancelled, so it writes nothing."""
        return self._end(lambda call: True)

    async def settled(self, within: float) -> bool:
        """Waits until no guarded call is in flight and none has arrived for SETTLE_SECONDS;
        False when `within` seconds ran out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return False
            quiet = time.monotonic() - self._last_arrival
            if quiet >= SETTLE_SECONDS:
                return True
            if loop.time() + SETTLE_SECONDS - quiet > deadline:
                return self._in_flight == 0
            await asyncio.sleep(SETTLE_SECONDS - quiet)

    def _end(self, which: Callable[[Call], bool]) -> int:
        """Marks the calls ended; those inside their handler are cancelled there (and answered
        SHUTTING_DOWN), a stream between two messages stops before the next one."""
        ended = 0
        for call in [*self._open, *self._watching]:
            if which(call) and not call.ended:
                call.ended = True
                if call.inside and call._task is not None and not call._task.done():
                    call._task.cancel()
                ended += 1
        return ended


async def _abort(context: Context, error: ServiceError) -> None:
    status = errors.to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _passed_code(call: Call, exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, grpc.aio.AbortError):
        code = call.context.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.CANCELLED


class _Lookup(grpc.GenericRpcHandler):
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        return self._pipeline.lookup(handler_call_details)


def _inline(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """A plain function handler run on the event loop: here only generated stubs of methods a
    servicer leaves out (health's List), which answer UNIMPLEMENTED at once."""

    async def run(request: Any, context: Context) -> Any:
        return function(request, context)

    return run


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """grpc would answer a body its deserializer rejects with UNKNOWN and the parser's text
    (and log a traceback per call); this one hands the pipeline a marker instead."""
    if deserialize is None:
        return None

    def tolerant(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception:
            return UNDECODABLE

    return tolerant


def _reading(inner: Callable[..., Any]) -> Callable[..., Any]:
    """A request-streaming handler whose request iterator refuses undecodable messages."""

    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if request is UNDECODABLE:
                raise errors.undecodable("a streamed request")
            yield request

    if inspect.isasyncgenfunction(inner):

        async def generator(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for message in inner(checked(requests), context):
                yield message

        return generator

    async def coroutine(requests: AsyncIterator[Any], context: Context) -> Any:
        return await inner(checked(requests), context)

    return coroutine


__all__ = ["UNDECODABLE", "AuthStep", "Call", "LimitStep", "Observer", "Pipeline", "ServiceError", "Step"]
