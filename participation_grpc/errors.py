"""Every failure becomes one gRPC status here: the single place where codes are decided."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from participation_grpc.auth import AuthError

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
# PostgreSQL's own classes: bad data, the server going away or refusing work.
_SQLSTATE_CLASS = {"22": Code.INVALID_ARGUMENT, "08": Code.UNAVAILABLE, "53": Code.UNAVAILABLE,
                   "57": Code.UNAVAILABLE}
_QUERY_CANCELED = "57014"  # statement_timeout or a cancelled call
# Losing a race is retried inside the service (db.Database), never shown to callers.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


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


def invalid_argument(field_name: str, description: str, reason: str = "INVALID_ARGUMENT",
                     **metadata: str) -> ServiceError:
    return ServiceError(Code.INVALID_ARGUMENT, reason, f"{field_name}: {description}",
                        metadata=metadata, violations=[Violation(field_name, description)])


def shutting_down() -> ServiceError:
    return ServiceError(Code.UNAVAILABLE, "SHUTTING_DOWN", "The server is shutting down; retry")


def rate_limited(limit_class: str, limit: int, retry_after_seconds: float,
                 user_id: str) -> ServiceError:
    return ServiceError(
        Code.RESOURCE_EXHAUSTED, "RATE_LIMITED",
        f"Too many {limit_class} calls: at most {limit} per minute; "
        f"retry in {retry_after_seconds:.1f} s",
        metadata={"limit_class": limit_class, "limit": str(limit)},
        retry_after_seconds=retry_after_seconds, quota_subject=f"user:{user_id}")


def classify(exc: BaseException, method: str) -> ServiceError:
    """The ServiceError an exception stands for; anything unexpected is logged in full."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, AuthError):
        return ServiceError(Code.UNAUTHENTICATED, exc.reason, exc.message)
    if isinstance(exc, asyncpg.PostgresError):
        return _from_postgres(exc, method)
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncio.TimeoutError)):
        log.warning("database unreachable during %s: %r", method, exc)
        return _database_unavailable()
    if isinstance(exc, NotImplementedError):
        return ServiceError(Code.UNIMPLEMENTED, "NOT_IMPLEMENTED", "This method is not implemented yet")
    log.error("unexpected error in %s", method, exc_info=exc)
    return _internal()


def _from_postgres(exc: asyncpg.PostgresError, method: str) -> ServiceError:
    sqlstate = exc.sqlstate or ""
    code = _SQLSTATE.get(sqlstate)
    if code is not None:
        metadata = _metadata(exc.hint)
        error = ServiceError(code, exc.detail or code.name, exc.message, metadata=metadata)
        if code is Code.INVALID_ARGUMENT:
            error.violations = [Violation(metadata.get("field", ""), exc.message)]
        return error
    if sqlstate == _QUERY_CANCELED:
        return ServiceError(Code.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "The deadline passed")
    code = _SQLSTATE_CLASS.get(sqlstate[:2])
    if code is Code.INVALID_ARGUMENT:
        log.info("rejected value in %s: %s", method, exc)
        return ServiceError(code, "INVALID_ARGUMENT", "A value in the request is not valid",
                            violations=[Violation("", "A value in the request is not valid")])
    if code is Code.UNAVAILABLE:
        log.warning("database unavailable during %s: %s", method, exc)
        return _database_unavailable()
    log.error("unexpected database error in %s", method, exc_info=exc)
    return _internal()


def _metadata(hint: str | None) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in json.loads(hint or "{}").items()}
    except (ValueError, AttributeError):
        return {}


def _database_unavailable() -> ServiceError:
    return ServiceError(Code.UNAVAILABLE, "DATABASE_UNAVAILABLE", "The database is unavailable; retry")


def _internal() -> ServiceError:
    return ServiceError(Code.INTERNAL, "INTERNAL", "Internal error")


def to_status(error: ServiceError) -> grpc.Status:
    """The wire status: google.rpc.Status with ErrorInfo and the details its code calls for."""
    details = [error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN,
                                           metadata=error.metadata)]
    if error.violations:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]))
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if error.quota_subject is not None:
        details.append(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=error.quota_subject,
                                                     description=error.message)
        ]))
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=packed)
    wire: grpc.Status = rpc_status.to_status(status)
    return wire
