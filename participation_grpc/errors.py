"""Every failure becomes one gRPC status here: the single place where codes are decided."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from participation_grpc.auth import AuthError
from participation_grpc.floodlog import FloodLog

DOMAIN = "participation"
log = logging.getLogger(__name__)
Code = grpc.StatusCode

# Rule violations raised by the procedures: SQLSTATE 'PA' + the gRPC code's number.
_SQLSTATE = {
    "PA003": Code.INVALID_ARGUMENT,
    "PA005": Code.NOT_FOUND,
    "PA006": Code.ALREADY_EXISTS,
    "PA007": Code.PERMISSION_DENIED,
    "PA009": Code.FAILED_PRECONDITION,
}
# PostgreSQL's own codes. Losing a race (serialization failure, deadlock, a concurrent insert of
# the same key or removal of a referenced row) changed nothing, so db.Database runs the call
# again; only when that keeps failing does the caller hear "busy".
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "23505", "23503"})
_BUSY_SQLSTATES = RETRYABLE_SQLSTATES | {
    "55P03",  # lock_not_available: waited DB_LOCK_TIMEOUT_MS for a row lock
    "57014",  # query_canceled: DB_STATEMENT_TIMEOUT_MS (the caller's own deadline never gets
    # here: grpc cancels the handler, and asyncpg turns that into CancelledError)
    "55006",  # object_in_use
}
_GONE_SQLSTATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a failover left us on a standby
        "25P03",  # idle_in_transaction_session_timeout
        "40003",  # statement_completion_unknown
    }
)
# Whole classes, by their first two characters.
_GONE_CLASSES = frozenset(
    {
        "08",  # connection exception
        "53",  # insufficient resources: too many connections, disk full, out of memory
        "57",  # operator intervention: admin or crash shutdown, cannot connect now
        "58",  # system error: I/O
    }
)
_BAD_VALUE_CLASSES = frozenset(
    {
        "22",  # data exception: a value the database cannot take
        "54",  # program limit exceeded: a value too large to index or store
    }
)
# What a driver raises when the connection breaks mid-call, whatever state it was in (asyncpg's
# InternalClientError "cannot switch to state 12" during a restart is one of these).
_CONNECTION_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)
BUSY_RETRY_SECONDS = 1.0
UNAVAILABLE_RETRY_SECONDS = 1.0
_outage = FloodLog(log, logging.WARNING, "database unavailable")
_busy = FloodLog(log, logging.WARNING, "database busy")
_undecodable = FloodLog(log, logging.INFO, "refused request bodies that are not valid protobuf")


@dataclass
class Violation:
    field: str
    description: str


@dataclass
class ServiceError(Exception):
    """A failure already decided: a code, a stable reason and a message fit for the caller."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    retry_after_seconds: float | None = None
    quota_subject: str | None = None

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


def invalid_argument(
    field_name: str, description: str, reason: str = "INVALID_ARGUMENT", **metadata: str
) -> ServiceError:
    return ServiceError(
        Code.INVALID_ARGUMENT,
        reason,
        f"{field_name}: {description}",
        metadata=metadata,
        violations=[Violation(field_name, description)],
    )


def shutting_down() -> ServiceError:
    return ServiceError(Code.UNAVAILABLE, "SHUTTING_DOWN", "The server is shutting down; retry")


def rate_limited(limit_class: str, limit: int, retry_after_seconds: float, user_id: str) -> ServiceError:
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        f"Too many {limit_class} calls: at most {limit} per minute; retry in {retry_after_seconds:.1f} s",
        metadata={"limit_class": limit_class, "limit": str(limit)},
        retry_after_seconds=retry_after_seconds,
        quota_subject=f"user:{user_id}",
    )


def too_many_streams(limit: int, user_id: str) -> ServiceError:
    """Open WatchActivity streams per user and replica (contract 9): a place frees when one of
    the caller's streams ends, so RetryInfo can only suggest a short wait."""
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        f"Too many open streams: at most {limit} per user; close one and retry",
        metadata={"limit_class": "streams", "limit": str(limit)},
        retry_after_seconds=1.0,
        quota_subject=f"user:{user_id}",
    )


def overloaded(limit: int) -> ServiceError:
    """GRPC_MAX_CONCURRENT_RPCS calls are already in progress on this server."""
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "OVERLOADED",
        f"The server is handling its maximum of {limit} calls; retry",
        metadata={"limit": str(limit)},
        retry_after_seconds=BUSY_RETRY_SECONDS,
    )


def undecodable(method: str) -> ServiceError:
    """A body that is not a message of the method's request type; nothing of the parser's text
    goes to the caller, and a burst of them is logged as one line."""
    _undecodable.record(method)
    message = "The request body is not a valid protobuf message of the request type"
    return ServiceError(
        Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", message, violations=[Violation("", message)]
    )


def database_busy(waited_for: str) -> ServiceError:
    """The call waited past a configured limit (a row lock, a pool connection, its statement,
    a race retried too often); nothing was written."""
    _busy.record(waited_for)
    return ServiceError(
        Code.UNAVAILABLE,
        "DATABASE_BUSY",
        "The database is busy; nothing was changed; retry",
        retry_after_seconds=BUSY_RETRY_SECONDS,
    )


def database_unavailable(what: str) -> ServiceError:
    """The database cannot be reached, or went away during the call."""
    _outage.record(what)
    return ServiceError(
        Code.UNAVAILABLE,
        "DATABASE_UNAVAILABLE",
        "The database is unavailable; retry",
        retry_after_seconds=UNAVAILABLE_RETRY_SECONDS,
    )


def database_answers() -> None:
    """The database answered a call again: the outage (if any) is over, and the log says so."""
    _outage.ended("database answers again")


def classify(exc: BaseException, method: str) -> ServiceError:
    """The ServiceError an exception stands for; anything unexpected is logged in full."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, AuthError):
        return ServiceError(Code.UNAUTHENTICATED, exc.reason, exc.message)
    if isinstance(exc, asyncpg.PostgresError):
        return _from_postgres(exc, method)
    if isinstance(exc, _CONNECTION_ERRORS):
        return database_unavailable(f"{method}: {type(exc).__name__}: {exc}")
    if isinstance(exc, NotImplementedError):
        return ServiceError(Code.UNIMPLEMENTED, "NOT_IMPLEMENTED", "This method is not implemented yet")
    log.error("unexpected error in %s", method, exc_info=exc)
    return internal()


def _from_postgres(exc: asyncpg.PostgresError, method: str) -> ServiceError:
    sqlstate = exc.sqlstate or ""
    code = _SQLSTATE.get(sqlstate)
    if code is not None:
        metadata = _metadata(exc.hint)
        error = ServiceError(code, exc.detail or code.name, exc.message, metadata=metadata)
        if code is Code.INVALID_ARGUMENT:
            error.violations = [Violation(metadata.get("field", ""), exc.message)]
        return error
    if sqlstate in _BUSY_SQLSTATES:
        return database_busy(f"{method}: SQLSTATE {sqlstate} {exc}")
    if sqlstate in _GONE_SQLSTATES or sqlstate[:2] in _GONE_CLASSES:
        return database_unavailable(f"{method}: SQLSTATE {sqlstate} {exc}")
    if sqlstate[:2] in _BAD_VALUE_CLASSES:
        log.info("rejected value in %s: SQLSTATE %s %s", method, sqlstate, exc)
        return invalid_argument("", "A value in the request is not valid")
    log.error("unexpected database error in %s (SQLSTATE %s)", method, sqlstate, exc_info=exc)
    return internal()


def _metadata(hint: str | None) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in json.loads(hint or "{}").items()}
    except (ValueError, AttributeError):
        return {}


def internal() -> ServiceError:
    return ServiceError(Code.INTERNAL, "INTERNAL", "Internal error")


def to_status(error: ServiceError) -> grpc.Status:
    """The wire status: google.rpc.Status with ErrorInfo and the details its code calls for."""
    details = [error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)]
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if error.quota_subject is not None:
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.quota_subject, description=error.message
                    )
                ]
            )
        )
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=packed)
    wire: grpc.Status = rpc_status.to_status(status)
    return wire
