"""Per-user, per-class call budgets: a sliding log in Redis and an in-process twin; no gRPC."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from participation_grpc import metrics
from participation_grpc.settings import RateLimits, Settings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
KEY_PREFIX = "participation:ratelimit"

# Which budget each ParticipationService method draws from (contract section 3).
_CLASSES = {
    "write": (
        "JoinActivity",
        "LeaveActivity",
        "CancelParticipation",
        "PromoteParticipant",
        "DemoteParticipant",
        "AcceptInvitation",
        "DeclineInvitation",
        "CancelInvitation",
    ),
    "bulk": ("MarkAttendance", "SendInvitations"),
    "confirm": ("ConfirmAttendance",),
    "read": (
        "ListParticipants",
        "ListUserActivities",
        "ListPendingVerifications",
        "ListReceivedInvitations",
        "ListSentInvitations",
        "ListWaitlist",
        "WatchActivity",
    ),  # once per stream, when it opens
}
METHOD_CLASSES = {method: name for name, methods in _CLASSES.items() for method in methods}

# A sliding log: at most `limit` admitted calls in any window, so no burst at window edges.
# Redis's own clock stamps every call, so replicas with skewed clocks still share one timeline.
# Only an admitted call is added; the reply is {admitted, microseconds until one would be}.
SLIDING_LOG = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, 0}
end
local blocking = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {0, tonumber(blocking[2]) + window - now}
"""


def limit_class(method: str) -> str:
    """A method added later without a class draws from the write budget rather than none."""
    return METHOD_CLASSES.get(method, "write")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit_class: str
    limit: int
    retry_after: float  # seconds until a call of this class would be admitted; 0 when allowed


class Limiter(Protocol):
    async def acquire(self, subject: str, limit_class: str) -> Decision: ...

    async def close(self) -> None: ...


class LocalLimiter:
    """The same sliding log in this process's memory: for development and for Redis outages."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._logs: dict[tuple[str, str], deque[float]] = {}
        self._swept = clock()

    async def acquire(self, subject: str, limit_class: str) -> Decision:
        return self.decide(subject, limit_class)

    async def close(self) -> None:
        pass

    def decide(self, subject: str, limit_class: str) -> Decision:
        limit = getattr(self._limits, limit_class)
        now = self._clock()
        calls = self._log(subject, limit_class, limit, now)
        if len(calls) < limit:
            calls.append(now)
            return Decision(True, limit_class, limit, 0.0)
        return Decision(False, limit_class, limit, calls[0] + WINDOW_SECONDS - now)

    def tracked(self) -> int:
        """How many (class, user) logs are kept: memory follows the users active in a window."""
        return len(self._logs)

    def record(self, subject: str, limit_class: str) -> None:
        """Remember a call admitted elsewhere (by Redis), so an outage starts from real history."""
        now = self._clock()
        self._log(subject, limit_class, getattr(self._limits, limit_class), now).append(now)

    def _log(self, subject: str, limit_class: str, limit: int, now: float) -> deque[float]:
        if now - self._swept > WINDOW_SECONDS:
            self._sweep(now)
        # maxlen: only the latest `limit` admissions can ever decide a refusal.
        calls = self._logs.setdefault((limit_class, subject), deque(maxlen=limit))
        while calls and calls[0] <= now - WINDOW_SECONDS:
            calls.popleft()
        return calls

    def _sweep(self, now: float) -> None:
        """Forget users with no call inside the window, so memory follows active users only."""
        self._logs = {k: v for k, v in self._logs.items() if v and v[-1] > now - WINDOW_SECONDS}
        self._swept = now


_UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)


class RedisLimiter:
    """One budget shared by every replica; while Redis cannot answer, `local` decides instead."""

    def __init__(
        self,
        client: Redis,
        limits: RateLimits,
        *,
        prefix: str = KEY_PREFIX,
        retry_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._script = client.register_script(SLIDING_LOG)  # EVALSHA, reloaded on NOSCRIPT
        self._limits = limits
        self._prefix = prefix
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._down_until: float | None = None
        # Log entries must be unique across replicas, or two calls in one microsecond would merge.
        replica = secrets.token_hex(6)
        self._members = (f"{replica}:{n}" for n in itertools.count())
        self.local = LocalLimiter(limits, clock)

    @property
    def using_redis(self) -> bool:
        return self._down_until is None

    async def acquire(self, subject: str, limit_class: str) -> Decision:
        if self._down_until is not None:
            if self._clock() < self._down_until:
                return self._fallback(subject, limit_class)
            # One probe per back-off: concurrent calls keep deciding locally meanwhile.
            self._down_until = self._clock() + self._retry_seconds
        try:
            decision = await self._shared(subject, limit_class)
        except _UNREACHABLE as exc:
            self._went_down(exc)
            # After a restart every pooled connection is dead; keeping them would make each
            # next probe fail on one of them and count as a new outage (it flipped ~12 times
            # in 6 s). The next probe opens a fresh connection.
            await self._client.connection_pool.disconnect()
            return self._fallback(subject, limit_class)
        self._came_back()
        if decision.allowed:
            self.local.record(subject, limit_class)
        return decision

    async def close(self) -> None:
        await self._client.aclose()

    async def _shared(self, subject: str, limit_class: str) -> Decision:
        limit = getattr(self._limits, limit_class)
        reply: Any = await self._script(
            keys=[f"{self._prefix}:{limit_class}:{subject}"],
            args=[limit, WINDOW_SECONDS * 1_000_000, next(self._members)],
        )
        return Decision(bool(reply[0]), limit_class, limit, int(reply[1]) / 1_000_000)

    def _fallback(self, subject: str, limit_class: str) -> Decision:
        metrics.FALLBACK_DECISIONS.inc()
        return self.local.decide(subject, limit_class)

    def _went_down(self, exc: BaseException) -> None:
        if self._down_until is None:
            metrics.REDIS_OUTAGES.inc()
            metrics.limiter_backend("local")
            log.warning(
                "Redis unreachable (%s: %s): rate limits are enforced per replica until it answers again",
                type(exc).__name__,
                exc,
            )
        self._down_until = self._clock() + self._retry_seconds

    def _came_back(self) -> None:
        if self._down_until is not None:
            log.info("Redis answers again: rate limits are shared by all replicas again")
            metrics.limiter_backend("redis")
        self._down_until = None


def build_limiter(settings: Settings) -> Limiter:
    """Redis when REDIS_URL is set, else the in-process limiter (development)."""
    if not settings.redis_url:
        metrics.limiter_backend("local")
        return LocalLimiter(settings.rate_limits)
    metrics.limiter_backend("redis")
    # Bounded timeouts: a dead Redis must not stall calls, since the local limiter can decide
    # at once; but not so short that a healthy Redis on a busy machine counts as down (settings).
    # One retry, on a connection error only: a pooled connection Redis closed (a restart)
    # fails at once, and a fresh one answers; a timeout is not retried.
    client = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    return RedisLimiter(client, settings.rate_limits, retry_seconds=settings.redis_retry_seconds)
