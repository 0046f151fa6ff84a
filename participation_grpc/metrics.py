"""Every metric the service exports (Prometheus), and the observer that counts each call.

The gRPC series use go-grpc-prometheus's names and labels, so dashboards and alerts written for
Go services work unchanged; the service's own series start with `participation_`. Gauges say how
they add up across WORKERS (prometheus-client's multiprocess mode, see exporter.py): "livesum"
sums the live processes, "livemax" takes the largest.

Per call the observer touches series it looked up once per method (and code), so a call costs a
few counter increments and one histogram observation, no label lookups.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import asyncpg
import grpc
from google.protobuf import descriptor_pool
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

from participation_grpc import errors

if TYPE_CHECKING:
    from participation_grpc.pipeline import Call

# No `*_created` series beside every counter and histogram (go-grpc-prometheus has none either).
disable_created_metrics()  # type: ignore[no-untyped-call]
_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# prometheus-client's defaults start at 5 ms; most calls here take 1-5 ms.
_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _GRPC_LABELS)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status (refused ones too).",
    (*_GRPC_LABELS, "grpc_code"),
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the call's arrival to its status, in seconds.",
    _GRPC_LABELS,
    buckets=_CALL_BUCKETS,
)
MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total",
    "Request messages received (one per call for unary requests).",
    _GRPC_LABELS,
)
MSG_SENT = Counter(
    "grpc_server_msg_sent_total", "Response messages sent (each message of a stream).", _GRPC_LABELS
)
FAILURES = Counter(
    "participation_rpc_failures_total",
    "Failed calls by ErrorInfo reason (ALREADY_JOINED, RATE_LIMITED, "
    "DATABASE_BUSY...): the code alone does not tell them apart.",
    ("grpc_service", "grpc_method", "grpc_code", "reason"),
)
OPEN_STREAMS = Gauge(
    "participation_streams_open",
    "Server streams open now.",
    ("grpc_service", "grpc_method"),
    multiprocess_mode="livesum",
)

POOL_SIZE = Gauge(
    "participation_db_pool_size", "Open connections of the database pool.", multiprocess_mode="livesum"
)
POOL_IN_USE = Gauge(
    "participation_db_pool_in_use", "Connections held by a call now.", multiprocess_mode="livesum"
)
POOL_MAX = Gauge(
    "participation_db_pool_max",
    "Most connections the pool may open (DB_POOL_MAX_SIZE, per process).",
    multiprocess_mode="livesum",
)
POOL_ACQUIRE_SECONDS = Histogram(
    "participation_db_pool_acquire_seconds",
    "Wait for a connection: a free place among DB_POOL_MAX_SIZE, "
    "then connecting when none is idle (waits that ran out answer "
    "DATABASE_BUSY and are not in it).",
    buckets=_WAIT_BUCKETS,
)
STATEMENTS = Counter(
    "participation_db_statements_total",
    "Statements run, by stored procedure and outcome: ok, refused (a rule of "
    "the procedure said no), race (lost a race, retried), timeout (lock or "
    "statement timeout), unavailable, cancelled, error.",
    ("procedure", "outcome"),
)
STATEMENT_SECONDS = Histogram(
    "participation_db_statement_seconds",
    "Time of one statement on its connection, by stored procedure.",
    ("procedure",),
    buckets=_CALL_BUCKETS,
)

RATE_LIMIT_DECISIONS = Counter(
    "participation_ratelimit_decisions_total",
    "Rate-limit decisions by class and outcome (allowed, refused).",
    ("limit_class", "outcome"),
)
LIMITER_BACKEND = Gauge(
    "participation_ratelimit_backend",
    "Processes whose limiter decides in this backend now: redis, or local "
    "(REDIS_URL unset, or Redis unreachable).",
    ("backend",),
    multiprocess_mode="livesum",
)
REDIS_OUTAGES = Counter(
    "participation_ratelimit_redis_outages_total",
    "Times Redis stopped answering and the in-process limiter took over.",
)
FALLBACK_DECISIONS = Counter(
    "participation_ratelimit_fallback_decisions_total",
    "Calls limited in process because Redis was unreachable.",
)

RELAY_LAG = Gauge(
    "participation_relay_lag_seconds",
    "Age of the oldest event the relay has not yet appended to EVENTS_STREAM "
    "(0 when caught up or when this process does not relay).",
    multiprocess_mode="livemax",
)

EVENTS_RELAYED = Counter(
    "participation_relay_events_total",
    "Events the relay appended to EVENTS_STREAM (at least once: a retried batch counts again).",
)

_OK = grpc.StatusCode.OK
# grpc_code values as go-grpc-prometheus writes them (Go's names: "OK", "InvalidArgument",
# "Canceled"), so alerts written for Go services match these series too.
GO_CODE_NAMES = {
    code: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode
}
GO_CODE_NAMES[grpc.StatusCode.OK] = "OK"
GO_CODE_NAMES[grpc.StatusCode.CANCELLED] = "Canceled"
_PROCEDURE = re.compile(r"\bactivity\.(\w+)\s*\(")


def relay_lag(seconds: float) -> None:
    """The relay's hook (events): call it after each pass with the age of the oldest event not
    yet relayed, 0 when none waits."""
    RELAY_LAG.set(seconds)


def limiter_backend(backend: str) -> None:
    """This process's limiter now decides in `backend` ("redis" or "local")."""
    for name in ("redis", "local"):
        LIMITER_BACKEND.labels(name).set(1 if name == backend else 0)


_decisions: dict[tuple[str, bool], Counter] = {}


def rate_limit_decision(limit_class: str, allowed: bool) -> None:
    child = _decisions.get((limit_class, allowed))
    if child is None:
        child = _decisions[(limit_class, allowed)] = RATE_LIMIT_DECISIONS.labels(
            limit_class, "allowed" if allowed else "refused"
        )
    child.inc()


def sample_pool(size: int, in_use: int, maximum: int) -> None:
    POOL_SIZE.set(size)
    POOL_IN_USE.set(in_use)
    POOL_MAX.set(maximum)


class Statements:
    """The statement series of each query text, learnt once per text."""

    def __init__(self) -> None:
        self._procedures: dict[str, str] = {}

    def procedure(self, query: str) -> str:
        name = self._procedures.get(query)
        if name is None:
            found = _PROCEDURE.search(query)
            name = self._procedures[query] = found[1] if found else "other"
        return name

    def ran(self, query: str, seconds: float, exc: BaseException | None = None) -> None:
        procedure = self.procedure(query)
        STATEMENTS.labels(procedure, "ok" if exc is None else statement_outcome(exc)).inc()
        STATEMENT_SECONDS.labels(procedure).observe(seconds)


def statement_outcome(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        if sqlstate.startswith("PA"):
            return "refused"
        if sqlstate in errors.RETRYABLE_SQLSTATES:
            return "race"
        if sqlstate in ("55P03", "57014"):
            return "timeout"
        if sqlstate[:2] in ("08", "53", "57", "58"):
            return "unavailable"
        return "error"
    if isinstance(exc, (TimeoutError, OSError, asyncpg.InterfaceError)):
        return "unavailable"
    if not isinstance(exc, Exception):  # CancelledError: the caller went away, or shutdown
        return "cancelled"
    return "error"


class _Series:
    """The children of one method's series (the handled ones per code, made on first use)."""

    __slots__ = ("_failures", "_handled", "_labels", "open", "received", "seconds", "sent", "started")

    def __init__(self, call: Call) -> None:
        service, method = call.method.lstrip("/").split("/", 1)
        kind, request_streaming = _kind(service, method, call.streaming)
        self._labels = (kind, service, method)
        self.started = STARTED.labels(*self._labels)
        self.seconds = HANDLING_SECONDS.labels(*self._labels)
        self.sent = MSG_SENT.labels(*self._labels)
        # Request streams (reflection's) are not counted message by message.
        self.received = None if request_streaming else MSG_RECEIVED.labels(*self._labels)
        self.open = OPEN_STREAMS.labels(service, method) if call.streaming else None
        self._handled: dict[grpc.StatusCode, Counter] = {}
        self._failures: dict[tuple[grpc.StatusCode, str], Counter] = {}

    def handled(self, code: grpc.StatusCode) -> Counter:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = HANDLED.labels(*self._labels, GO_CODE_NAMES[code])
        return child

    def failed(self, code: grpc.StatusCode, reason: str) -> Counter:
        child = self._failures.get((code, reason))
        if child is None:
            child = self._failures[(code, reason)] = FAILURES.labels(
                self._labels[1], self._labels[2], GO_CODE_NAMES[code], reason or code.name
            )
        return child


def _kind(service: str, method: str, streaming: bool) -> tuple[str, bool]:
    """go-grpc-prometheus's grpc_type, from the method's descriptor when the pool knows it."""
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    except KeyError:
        return ("server_stream" if streaming else "unary"), False
    requests, responses = descriptor.client_streaming, descriptor.server_streaming
    kind = {
        (False, False): "unary",
        (True, False): "client_stream",
        (False, True): "server_stream",
        (True, True): "bidi_stream",
    }[(requests, responses)]
    return kind, requests


class CallMetrics:
    """The pipeline observer behind the grpc_server_* series: every call, refused ones too."""

    def __init__(self) -> None:
        self._series: dict[str, _Series] = {}

    def _of(self, call: Call) -> _Series:
        series = self._series.get(call.method)
        if series is None:
            series = self._series[call.method] = _Series(call)
        return series

    async def started(self, call: Call) -> None:
        series = self._of(call)
        series.started.inc()
        if series.received is not None:
            series.received.inc()
        if series.open is not None:
            series.open.inc()

    def sent(self, call: Call) -> None:
        self._of(call).sent.inc()

    def finished(self, call: Call, code: grpc.StatusCode, reason: str) -> None:
        series = self._of(call)
        series.handled(code).inc()
        series.seconds.observe(time.monotonic() - call.started)
        if series.open is not None:
            series.open.dec()
        elif code is _OK:
            series.sent.inc()
        if code is not _OK:
            series.failed(code, reason).inc()


def sample(name: str, **labels: str) -> float:
    """A series' current value in this process (tests, a debugger); 0 when it has none yet."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
